"""`aloe train` with Ray workers and/or several learner processes: the order of
`aloe.train.train` (check everything, then write), with a process group and a worker pool.

    every rank     join torchrun's group; check the config, the run directory, the flags
    rank 0         connect to Ray and start the workers (an unreachable cluster is a
                   UsageError: nothing written yet); then the run directory and config.json
    every rank     the run (rank 0 the Leader, the others Followers: aloe.distributed.ddp)
    rank 0         the report; then the workers are stopped and a Ray it started shut down
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from aloe.algos import best_of_n
from aloe.algos.table import ALGORITHMS
from aloe.distributed import ddp
from aloe.distributed.options import Scale
from aloe.distributed.workers import WorkerPool, connect
from aloe.envs.registry import simulated
from aloe.errors import UsageError
from aloe.evaluation.run_report import write_report
from aloe.run_dir import run_lock, start_run_dir
from aloe.train import prepare_run, say_banner


def train(cfg: Any, resume: bool, scale: Scale) -> list[dict[str, Any]]:
    several = ddp.init(cfg.device)
    try:
        cfg = prepare_run(cfg, resume)
        ddp.check(cfg)
        scale.check_run(cfg.algo, ALGORITHMS[cfg.algo].collect is not None, simulated(cfg.task))
        best_of_n.check_run(cfg, scale.workers)
        ddp.barrier()  # every rank has checked before rank 0 writes
        torch.manual_seed(cfg.seed)
        lock = run_lock(cfg, resume) if ddp.is_main() else contextlib.nullcontext()
        with lock:  # rank 0 writes the run directory: it alone holds it
            pool, started = _start_workers(cfg, scale) if ddp.is_main() else (None, False)
            try:
                trainer = _trainer(cfg)
                trainer.workers = pool
                if ddp.is_main() and not resume:
                    start_run_dir(cfg)
                if ddp.is_main():
                    say_banner(trainer)
                history = trainer.run()
                if ddp.is_main():
                    write_report(cfg.out, "aloe train")
            finally:
                _stop_workers(pool, started)
        ddp.barrier()
        return history
    finally:
        if several and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _trainer(cfg: Any) -> Any:
    try:
        return ddp.trainer(cfg)
    except (ImportError, FileNotFoundError) as e:  # as aloe.train.train: the vision extra
        raise UsageError(str(e)) from None


def _start_workers(cfg: Any, scale: Scale) -> tuple[Any, bool]:
    """The Ray worker pool of `--workers` (none without), and whether Ray was started here."""
    if not scale.workers:
        return None, False
    started = connect(scale.ray_address, num_cpus=scale.workers)
    try:
        return WorkerPool(cfg, scale.workers, scale.worker_timeout), started
    except BaseException:
        _stop_workers(None, started)
        raise


def _stop_workers(pool: Any, started: bool) -> None:
    if pool is not None:
        pool.close()
    if started:
        import ray  # optional extra: ray

        ray.shutdown()
