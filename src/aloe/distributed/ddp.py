"""`aloe train` on several learner processes: `torchrun --nproc-per-node P -m aloe.cli train ...`
or `aloe train --learner-procs P` (which runs that torchrun command).

Rank 0 is the run: it collects (in-process or on Ray workers), writes the store, evaluates,
checkpoints and logs, exactly as one process does. Every rank trains: rank 0 sends the
others what the update reads (the checkpoint it resumed from, the frames of each
iteration, each iteration's metrics so that every rank's history is the same), and each
update step trains on the rank's shard of the global batch with gradients averaged
(`aloe.shard`). The learners start from rank 0's weights and stay equal.
Backend: gloo on CPU, NCCL on CUDA (one GPU per rank, `LOCAL_RANK`).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from typing import Any

import torch
import torch.distributed as dist

from aloe.algos.table import ALGORITHMS
from aloe.collect import CollectStats
from aloe.data import Frames
from aloe.distributed.options import Scale
from aloe.errors import require
from aloe.run import build_learner
from aloe.shard import world
from aloe.train import Trainer, prepare_run

# updates of per-row losses only (the shard's premise): aloe, dagger, bc
DDP_ALGOS = tuple(a for a, row in ALGORITHMS.items() if row.sharding is not None)


def init(device: str) -> bool:
    """Join torchrun's process group (env://) when launched by it with WORLD_SIZE > 1;
    returns whether this process is one of several learners."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


def check(cfg: Any, size: int | None = None) -> None:
    """What sharding over `size` processes (default: this process group's) needs of the
    run's config: a per-row-loss algorithm and a batch that splits evenly; UsageError
    before any work."""
    size = world()[1] if size is None else size
    if size == 1:
        return
    require(
        cfg.algo in DDP_ALGOS,
        "--learner-procs",
        size,
        f"algo {cfg.algo} trains on one process; use one of {', '.join(DDP_ALGOS)}",
    )
    require(
        cfg.optim.batch_size % size == 0,
        "config field optim.batch_size",
        cfg.optim.batch_size,
        f"must be a multiple of the {size} learner processes",
    )
    row = ALGORITHMS[cfg.algo]
    assert row.sharding is not None  # DDP_ALGOS
    row.sharding(row.settings(cfg))  # the algorithm's own settings that forbid it


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled; the others pass anything)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def trainer(cfg: Any) -> Trainer:
    """The Trainer of this rank: the run itself on rank 0 (`Leader`), a `Follower` elsewhere."""
    if not dist.is_initialized():
        return Trainer(cfg)
    return Leader(cfg) if is_main() else Follower(cfg)


class Leader(Trainer):
    """Rank 0: the one-process Trainer, sending the followers what their updates read."""

    def warm_start(self) -> None:
        broadcast(None)  # no checkpoint: start afresh
        super().warm_start()

    def restore(self, state: dict[str, Any]) -> None:
        broadcast(state)
        super().restore(state)

    def frames(self) -> Frames:
        return broadcast(super().frames())

    def _build_learner(self, *args: Any, **kwargs: Any) -> Any:
        return broadcast_weights(super()._build_learner(*args, **kwargs))

    def _finish(self, k: int, stats: CollectStats, row: dict[str, Any], start: float) -> None:
        super()._finish(k, stats, row, start)
        broadcast(self.history[-1])


class Follower(Trainer):
    """Rank r > 0: updates only; no store, no evaluation, no files."""

    def run(self) -> list[dict[str, Any]]:
        state = broadcast(None)
        if state is None:
            self.warm_start()
        else:
            self.restore(state)
        for k in range(len(self.history), self.final_iteration + 1):
            self.iteration(k)
        return self.history

    def _collect(self, k: int, rule: Any, policy: Any) -> CollectStats:
        return CollectStats()  # rank 0 collects

    def import_demos(self) -> CollectStats:
        return CollectStats()  # rank 0 stores the --demos dataset's episodes

    def frames(self) -> Frames:
        return broadcast(None)

    def _build_learner(self, *args: Any, **kwargs: Any) -> Any:
        return broadcast_weights(super()._build_learner(*args, **kwargs))

    def _tensorboard(self, purge_step: int) -> Any:
        return _NoWriter()

    def _finish(self, k: int, stats: CollectStats, row: dict[str, Any], start: float) -> None:
        self.history.append(broadcast(None))

    def restore(self, state: dict[str, Any]) -> None:
        self.learner = build_learner(self.cfg, obs=self.obs)
        self.learner.load_state_dict(state["learner"])
        self.history = state["history"]


def broadcast_weights(learner: Any) -> Any:
    """Every rank's learner with rank 0's initial state (as DDP's constructor does)."""
    learner.load_state_dict(broadcast(learner.state_dict() if is_main() else None))
    return learner


class _NoWriter:
    def add_scalar(self, *args: Any) -> None: ...

    def flush(self) -> None: ...


def relaunch(cfg: Any, resume: bool, argv: list[str], scale: Scale) -> int:
    """`aloe train ARGV` on `scale.learner_procs` learner processes of this machine, through
    torchrun; returns its exit code. The run is checked here first, so that a user's
    mistake is one UsageError of this process, not one traceback per rank."""
    procs = scale.learner_procs
    checked = prepare_run(copy.deepcopy(cfg), resume)
    check(checked, procs)
    scale.check_run(checked.algo, ALGORITHMS[checked.algo].collect is not None)
    torchrun = shutil.which("torchrun")
    base = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*base, "--standalone", f"--nproc-per-node={procs}", "-m", "aloe.cli", "train", *argv]
    return subprocess.call(cmd)
