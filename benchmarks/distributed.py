"""Figures of the distributed paths (README, "Beyond one machine"), measured on this machine.

    python benchmarks/distributed.py [--preset smoke] [--episodes 6] [--learner-steps 30]
                                     [--parts collection,learner] [--json]

- collection: the same `--episodes` episode seeds of iteration 1 (an untrained actor with
  the operator in the loop, committed to a store), in this process and on 1 and 2 Ray
  workers of a local Ray (`ray.init(num_cpus=2)`; starting the workers is not timed):
  environment steps/s. Every path runs one torch thread per simulator.
- broadcast: `WorkerPool.broadcast_s` per weight version (one `ray.put` of the actor, every
  worker loading it), over 5 versions on 2 workers; the actor's size (its state_dict).
- store writer: the in-process episodes appended one at a time to a fresh EpisodeStore.
- learner: critic and actor steps of the preset's learner on synthetic batches of
  `optim.batch_size` chunks, under torchrun with 1 and 2 gloo processes of one thread each
  (the global batch the same): steps/s.

Prints a table, or with --json one JSON object. The figures are wall-clock rates on a
machine that may be shared: compare the ratios measured in one run, and read `load_avg`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from aloe.collect import CollectConfig, CollectStats, collect
from aloe.config import TrainConfig, preset
from aloe.data import ChunkBatch, episode_seed
from aloe.datasets.store import EpisodeStore
from aloe.envs.metaworld import CONTROL_HZ, TaskEnv
from aloe.observation import Observations
from aloe.operators.profiles import make_operator
from aloe.policies.chunk_policy import FlowChunkPolicy
from aloe.run import build_learner

HERE = Path(__file__).resolve()


def config(name: str) -> TrainConfig:
    cfg = preset(name).resolved()
    cfg.progress, cfg.device = False, "cpu"
    return cfg


def open_store(cfg: TrainConfig, root: Path) -> EpisodeStore:
    """A store as the run's (`aloe.train.Trainer._open_store`, state observations)."""
    env = TaskEnv(cfg.env)
    sim = env.sim_state_dim if cfg.collect.record_sim_state else None
    return EpisodeStore.open_or_create(
        root, fps=CONTROL_HZ, state_dim=env.state_dim, action_dim=env.action_dim, sim_state_dim=sim
    )


def rule(cfg: TrainConfig, episodes: int) -> CollectConfig:
    """The run's rule, for exactly `episodes` episodes (a quota only the budget ends)."""
    return dataclasses.replace(cfg.collect, success_quota=episodes, max_episodes=episodes)


def in_process(cfg: TrainConfig, actor: Any, episodes: int, root: Path) -> dict[str, Any]:
    env, operator = TaskEnv(cfg.env), make_operator(cfg.task, cfg.operator, seed=cfg.seed)
    policy = FlowChunkPolicy(
        actor,
        version=0,
        exec_horizon=cfg.exec_horizon,
        seed=cfg.seed,
        device=torch.device("cpu"),
        obs=Observations(cfg, "cpu"),
    )
    seeds = (episode_seed(cfg.seed, 1, i) for i in range(episodes))
    store = open_store(cfg, root / "in-process")
    start = time.perf_counter()
    eps, stats = collect(
        env,
        operator,
        rule(cfg, episodes),
        policy=policy,
        seeds=seeds,
        store=store,
        iteration=1,
        progress=False,
    )
    wall = time.perf_counter() - start
    return {
        "env_steps": stats.env_steps,
        "wall_s": wall,
        "steps_per_s": stats.env_steps / wall,
        "episodes": eps,
    }


def on_workers(
    cfg: TrainConfig, actor: Any, workers: int, episodes: int, root: Path
) -> dict[str, Any]:
    from aloe.distributed.workers import WorkerPool

    pool = WorkerPool(cfg, workers, timeout=600.0)
    try:
        store = open_store(cfg, root / f"workers-{workers}")
        start = time.perf_counter()
        pool.set_policy(actor, 0, seed=cfg.seed)
        stats = pool.collect(1, rule(cfg, episodes), store, CollectStats(), progress=False)
        wall = time.perf_counter() - start
        out = {"env_steps": stats.env_steps, "wall_s": wall, "steps_per_s": stats.env_steps / wall}
        if workers == 2:
            pool.take_broadcast_s()
            for version in range(1, 6):
                pool.set_policy(actor, version, seed=cfg.seed)
            out["broadcast_s"] = pool.take_broadcast_s() / 5
        return out
    finally:
        pool.close()


def store_writer(cfg: TrainConfig, eps: list[Any], root: Path) -> dict[str, float]:
    store = open_store(cfg, root / "writer")
    start = time.perf_counter()
    for ep in eps:
        store.append(ep)
    wall = time.perf_counter() - start
    steps = sum(len(ep) for ep in eps)
    return {"episodes_per_s": len(eps) / wall, "steps_per_s": steps / wall}


def collection(cfg: TrainConfig, episodes: int) -> dict[str, Any]:
    import ray

    torch.set_num_threads(1)  # as each worker: one thread per simulator
    torch.manual_seed(0)
    actor = build_learner(cfg).actor
    with tempfile.TemporaryDirectory() as tmp:
        here = in_process(cfg, actor, episodes, Path(tmp))
        eps = here.pop("episodes")
        out: dict[str, Any] = {
            "in_process": here,
            "store_writer": store_writer(cfg, eps, Path(tmp)),
        }
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for n in (1, 2):
                out[f"workers_{n}"] = on_workers(cfg, actor, n, episodes, Path(tmp))
        finally:
            ray.shutdown()
    out["actor_mb"] = sum(t.numel() * t.element_size() for t in actor.state_dict().values()) / 1e6
    base = here["steps_per_s"]
    out["ratio_workers_1"] = out["workers_1"]["steps_per_s"] / base
    out["ratio_workers_2"] = out["workers_2"]["steps_per_s"] / base
    out["same_env_steps"] = (
        len({out[k]["env_steps"] for k in ("in_process", "workers_1", "workers_2")}) == 1
    )
    return out


# --- the learner, one torchrun process per rank ----------------------------------------------


def synthetic_batch(gen: torch.Generator, b: int, state_dim: int, horizon: int) -> ChunkBatch:
    """A batch of random chunks, the same on every rank (one seeded generator each)."""
    return ChunkBatch(
        state=torch.randn(b, state_dim, generator=gen),
        actions=torch.rand(b, horizon, TaskEnv.ACTION_DIM, generator=gen) * 2 - 1,
        valid=torch.ones(b, horizon),
        reward=-torch.rand(b, generator=gen) * 5,
        next_state=torch.randn(b, state_dim, generator=gen),
        discount=torch.full((b,), 0.9),
        bootstrap=(torch.rand(b, generator=gen) > 0.1).float(),
        mc_return=torch.zeros(b),
        task_index=torch.zeros(b, dtype=torch.long),
        source=torch.zeros(b, dtype=torch.long),
        global_index=torch.arange(b),
    )


def learner_child(name: str, steps: int, out: Path) -> None:
    """Under torchrun: time `steps` critic and actor steps (after 3 of each untimed)."""
    import torch.distributed as dist

    from aloe.algos.context import UpdateContext

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    cfg = config(name)
    learner = build_learner(cfg)
    ctx = UpdateContext(cfg, cfg.aloe, 1, None, learner, sampler=None)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(7)
    dim, b = Observations(cfg, "cpu").dim, cfg.optim.batch_size

    class Batches:
        def sample(self, n: int) -> ChunkBatch:
            return synthetic_batch(gen, n, dim, cfg.horizon)

    rates = {}
    for kind, step in (("critic", learner.critic_step), ("actor", learner.actor_step)):
        ctx.steps(3, step, Batches(), kind)  # type: ignore[arg-type]
        start = time.perf_counter()
        ctx.steps(steps, step, Batches(), kind)  # type: ignore[arg-type]
        rates[f"{kind}_steps_per_s"] = steps / (time.perf_counter() - start)
    if not dist.is_initialized() or dist.get_rank() == 0:
        out.write_text(json.dumps({**rates, "batch_size": b}))
    if dist.is_initialized():
        dist.destroy_process_group()


def learner(name: str, steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        for procs in (1, 2):
            path = Path(tmp) / f"{procs}.json"
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={procs}",
                str(HERE),
                "--learner-child",
                str(path),
                "--preset",
                name,
                "--learner-steps",
                str(steps),
            ]
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            out[f"procs_{procs}"] = json.loads(path.read_text())
    for kind in ("critic", "actor"):
        key = f"{kind}_steps_per_s"
        out[f"ratio_{kind}"] = out["procs_2"][key] / out["procs_1"][key]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="smoke")
    p.add_argument("--episodes", type=int, default=6)
    p.add_argument("--learner-steps", type=int, default=30)
    p.add_argument("--parts", default="collection,learner", help="which figures")
    p.add_argument("--json", action="store_true")
    p.add_argument("--learner-child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.learner_child is not None:
        learner_child(args.preset, args.learner_steps, args.learner_child)
        return
    parts = set(args.parts.split(","))
    start, load = time.time(), list(os.getloadavg())
    cfg = config(args.preset)
    result: dict[str, Any] = {
        "preset": args.preset,
        "episodes": args.episodes,
        "cores": os.cpu_count(),
    }
    if "collection" in parts:
        result["collection"] = collection(cfg, args.episodes)
    if "learner" in parts:
        result["learner"] = learner(args.preset, args.learner_steps)
    result |= {
        "load_avg_start": load,
        "load_avg_end": list(os.getloadavg()),
        "wall_s": time.time() - start,
    }
    print(json.dumps(result, indent=1) if args.json else table(result))


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    if "collection" in r:
        c = r["collection"]
        rows += [
            ("collection in-process", f"{c['in_process']['steps_per_s']:.0f} steps/s"),
            (
                "collection 1 worker",
                f"{c['workers_1']['steps_per_s']:.0f} steps/s (x{c['ratio_workers_1']:.2f})",
            ),
            (
                "collection 2 workers",
                f"{c['workers_2']['steps_per_s']:.0f} steps/s (x{c['ratio_workers_2']:.2f})",
            ),
            (
                "weight broadcast (2 workers)",
                f"{c['workers_2']['broadcast_s'] * 1e3:.0f} ms ({c['actor_mb']:.2f} MB actor)",
            ),
            ("store writer", f"{c['store_writer']['episodes_per_s']:.1f} episodes/s"),
        ]
    if "learner" in r:
        ln = r["learner"]
        rows += [
            (
                "learner 1 process",
                f"{ln['procs_1']['critic_steps_per_s']:.1f} critic, "
                f"{ln['procs_1']['actor_steps_per_s']:.1f} actor steps/s",
            ),
            (
                "learner 2 processes",
                f"{ln['procs_2']['critic_steps_per_s']:.1f} critic "
                f"(x{ln['ratio_critic']:.2f}), "
                f"{ln['procs_2']['actor_steps_per_s']:.1f} actor "
                f"(x{ln['ratio_actor']:.2f}) steps/s",
            ),
        ]
    lines = [f"{what:30s} {fig}" for what, fig in rows]
    lines.append(f"load average {r['load_avg_start']} -> {r['load_avg_end']}, {r['wall_s']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
