"""`aloe bench`: speed figures measured in one run, reported as rates and ratios.

Nothing here asserts on time; the figures go into issue notes and the README.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aloe.envs.tasks import DEFAULT_TASK


@dataclass
class BenchArgs:
    """Measure environment, collection, sampling and update speed on this machine."""

    task: str = DEFAULT_TASK
    """MetaWorld task to step."""
    steps: int = 3000
    """Environment steps per collection measurement."""
    horizon: int = 50
    """Chunk length h for the sampler measurement."""
    batch_size: int = 256
    """Batch size for the sampler and the critic step."""
    out: Path | None = None
    """Also write the figures as JSON here."""


def _rate(fn: Callable[[], int], min_seconds: float = 1.0) -> float:
    """Units per second of `fn` (which returns how many units it did), over >= min_seconds."""
    done, start = 0, time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def bench_collection(task: str, steps: int, root: Path) -> dict[str, float]:
    """Raw env steps/s vs collection with the operator (demos, and takeovers of a random
    policy), both appending every episode to a crash-safe store under `root`."""
    from aloe.collect import CollectConfig, RandomPolicy, collect
    from aloe.datasets.store import EpisodeStore
    from aloe.envs.metaworld import CONTROL_HZ, EnvConfig, TaskEnv
    from aloe.operators.scripted import OperatorConfig, ScriptedOperator

    env = TaskEnv(EnvConfig(task=task))
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 4))
        if term or trunc:
            env.reset(seed=int(rng.integers(1000)))
    raw = steps / (time.perf_counter() - start)
    figures = {"env_raw_steps_per_s": raw}
    operator = ScriptedOperator(task, OperatorConfig())
    for name, policy in [("demo", None), ("takeover", RandomPolicy())]:
        store = EpisodeStore.create(root / name, fps=CONTROL_HZ, state_dim=env.state_dim,
                                    action_dim=env.action_dim, sim_state_dim=env.sim_state_dim)  # fmt: skip
        seeds, done, start = itertools.count(), 0, time.perf_counter()
        while done < steps:
            cfg = CollectConfig(success_quota=10**9, max_episodes=1)
            _, stats = collect(env, operator, cfg, policy=policy, seeds=seeds, store=store,
                               progress=False)  # fmt: skip
            done += stats.env_steps
        rate = done / (time.perf_counter() - start)
        figures[f"collect_{name}_steps_per_s"] = rate
        figures[f"collect_{name}_vs_raw"] = rate / raw
    return figures


def bench_sampler(root: Path, horizon: int, batch_size: int) -> dict[str, float]:
    """Sampler batches/s on the collected takeover data vs one critic step (default size)."""
    import torch

    from aloe.algos.aloe import AloeConfig, AloeLearner
    from aloe.critics.chunked_q import ChunkedQCritic, CriticConfig
    from aloe.datasets.sampler import ChunkSampler
    from aloe.datasets.store import EpisodeStore
    from aloe.policies.flow import ActorConfig, FlowPolicy

    frames = EpisodeStore.open(root / "takeover").load_frames()
    sampler = ChunkSampler(frames, horizon=horizon, gamma=0.99)
    sample_rate = _rate(lambda: (sampler.sample(batch_size), 1)[1])
    actor = FlowPolicy(ActorConfig(horizon=horizon), state_dim=39, action_dim=4, num_tasks=1)
    critic = ChunkedQCritic(CriticConfig(horizon=horizon), state_dim=39, action_dim=4, num_tasks=1)
    learner = AloeLearner(actor, critic, AloeConfig(batch_size=batch_size))
    torch.manual_seed(0)
    critic_rate = _rate(lambda: (learner.critic_step(sampler.sample(batch_size)), 1)[1], 3.0)
    actor_rate = _rate(lambda: (learner.actor_step(sampler.sample(batch_size)), 1)[1], 3.0)
    return {
        "sampler_batches_per_s": sample_rate,
        "critic_steps_per_s": critic_rate,
        "actor_steps_per_s": actor_rate,
        "sampler_vs_critic_step": sample_rate / critic_rate,
    }


def cmd_bench(args: BenchArgs) -> int:
    figures: dict[str, Any] = {"task": args.task, "horizon": args.horizon, "batch": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        figures.update(bench_collection(args.task, args.steps, Path(tmp)))
        figures.update(bench_sampler(Path(tmp), args.horizon, args.batch_size))
    text = json.dumps(figures, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0
