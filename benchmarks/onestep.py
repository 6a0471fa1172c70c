"""ALOE's critic and actor steps with `aloe.update_sampler` flow against one-step, at a
preset's sizes, timed in one process with the two learners' calls interleaved (so that a
change in the machine's load falls on both alike).

    python benchmarks/onestep.py [--sizes smoke default] [--repeats 7] [--device cpu]

The learners are built as `aloe train --preset P` builds them (`aloe.speed.learner`), from
the same seed, and step on the same synthetic batch; the one-step actor step includes μ's
distillation step (the flow's own Euler steps on the batch's states, one ε each), which is
also timed alone, as is a BC step (the same under both). Prints one JSON object: per
preset the median ms of each call and the ratios one-step / flow of the critic and actor
steps and of the warm start (a distillation step every `aloe.onestep_bc_every` BC steps),
with the machine's load average and torch's threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from aloe.config import preset
from aloe.run import observations
from aloe.speed.learner import Sized, aloe_learner, batch_for
from aloe.speed.measure import synchronize


def sized(name: str, sampler: str, task: str, device: str) -> Sized:
    cfg = preset(name, task)
    cfg.device = device
    cfg.aloe.update_sampler = sampler
    cfg = cfg.resolved()
    obs = observations(cfg, device)
    torch.manual_seed(cfg.seed)
    return Sized(name, cfg, obs, aloe_learner(cfg, obs))


def interleaved(calls: dict[str, Callable[[], Any]], repeats: int, device: Any) -> dict[str, float]:
    """Median ms of each call over `repeats` rounds, one call of each per round (one warm-up)."""
    seconds: dict[str, list[float]] = {k: [] for k in calls}
    for r in range(repeats + 1):
        for key, fn in calls.items():
            start = time.perf_counter()
            fn()
            synchronize(device)
            if r:
                seconds[key].append(time.perf_counter() - start)
    return {k: 1e3 * statistics.median(v) for k, v in seconds.items()}


def measure(name: str, task: str, device: str, repeats: int) -> dict[str, Any]:
    flow, one = (sized(name, s, task, device) for s in ("flow", "one-step"))
    batch = batch_for(flow)
    every = one.cfg.aloe.onestep_bc_every
    ms = interleaved(
        {
            "critic_flow": lambda: flow.learner.critic_step(batch),
            "critic_one_step": lambda: one.learner.critic_step(batch),
            "actor_flow": lambda: flow.learner.actor_step(batch),
            "actor_one_step": lambda: one.learner.actor_step(batch),
            "bc": lambda: flow.learner.bc_step(batch),
            "distil": lambda: one.learner.distil_step(batch),
        },
        repeats,
        flow.device,
    )
    return {
        "sizes": flow.describe(),
        "ms": ms,
        "critic_ratio": ms["critic_one_step"] / ms["critic_flow"],
        "actor_ratio": ms["actor_one_step"] / ms["actor_flow"],
        "warm_start_ratio": 1 + ms["distil"] / (every * ms["bc"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["smoke", "default"])
    parser.add_argument("--task", default="pick-place-v3")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    load = os.getloadavg()
    figures = {name: measure(name, args.task, args.device, args.repeats) for name in args.sizes}
    report = {
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_avg_1m_before_after": [load[0], os.getloadavg()[0]],
        **figures,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
