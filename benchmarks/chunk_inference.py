"""Chunk inference before and after caching what no Euler step changes, at a preset's
size, in one process (issue 33, item 3).

    python benchmarks/chunk_inference.py [--preset default] [--rounds 15] [--calls 10]
        [--threads 1 2]

Inference is one observation -> one chunk, as collection calls it. The variants run in
rounds, each round calling every variant `--calls` times in turn, so that a load that moves
during the run moves all of them alike; the figures are medians over rounds:

- `step_by_step`: the sampling path before the cache (every Euler step runs `velocity`
  whole, as `euler_integrate` calls it), under no_grad;
- `cached`: `FlowChunkPolicy.act_chunk` as it is now: `FlowPolicy.integrate` under
  inference_mode, one intra-op thread whatever --threads says and oneDNN off
  (`chunk_policy.acting`).

- `cached_same_threads`: `FlowPolicy.sample` under inference_mode at --threads' count: the
  cache alone, without the thread count of `acting`.

--batches B... also times B chunks in one call (an update's a' and V^π samples), step by
step against `FlowPolicy.sample` under no_grad at --threads' count.

Untrained networks (a chunk's cost does not depend on the weights); prints one JSON object.
Never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from aloe.envs.tasks import DEFAULT_TASK
from aloe.nn import evaluating
from aloe.policies.base import chunk_noise
from aloe.policies.chunk_policy import FlowChunkPolicy
from aloe.policies.flow import FlowPolicy, euler_integrate
from aloe.speed import learner
from aloe.speed.measure import torch_threads


@torch.no_grad()
def step_by_step(actor: FlowPolicy, state: torch.Tensor, row: torch.Tensor, g: Any) -> Any:
    """`FlowPolicy.sample` of one chunk per row as bea0be5 sampled it, before the cache."""
    with evaluating(actor):
        cond = actor.condition(state, row)
        shape = (actor.horizon, actor.action_dim)
        noise = chunk_noise(len(state), 1, shape, g, cond.device)
        a = euler_integrate(
            lambda x, t: actor.velocity(x, t, cond), noise, actor.config.num_flow_steps
        )
    return actor.action_norm.unnormalize(a).clamp(-1.0, 1.0).numpy()


@torch.inference_mode()
def cached(actor: FlowPolicy, state: torch.Tensor, row: torch.Tensor, g: Any) -> Any:
    return actor.sample(state, row, 1, g)[:, 0].numpy()


def rounds(fns: dict[str, Callable[[], Any]], n_rounds: int, calls: int) -> dict[str, float]:
    """Median ms per call of each function, timed in alternating rounds."""
    seconds: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(n_rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            seconds[name].append((time.perf_counter() - start) / calls)
    return {k: 1e3 * float(np.median(v)) for k, v in seconds.items()}


def inference(s: learner.Sized, n_rounds: int, calls: int) -> dict[str, Any]:
    policy = FlowChunkPolicy(s.learner.actor, version=0, exec_horizon=5, seed=0, device=s.device)
    obs = {"state": np.random.default_rng(0).standard_normal(s.obs.dim).astype(np.float32)}
    state, row = policy.inputs(obs)
    g = torch.Generator().manual_seed(1)
    old = step_by_step(s.learner.actor, state, row, torch.Generator().manual_seed(1))
    new = cached(s.learner.actor, state, row, torch.Generator().manual_seed(1))
    ms = rounds(
        {
            "step_by_step": lambda: step_by_step(s.learner.actor, state, row, g),
            "cached_same_threads": lambda: cached(s.learner.actor, state, row, g),
            "cached": lambda: policy.act_chunk(obs),
        },
        n_rounds,
        calls,
    )
    return {
        **{f"{k}_ms": v for k, v in ms.items()},
        "cached_same_threads_vs_step_by_step": ms["cached_same_threads"] / ms["step_by_step"],
        "cached_vs_step_by_step": ms["cached"] / ms["step_by_step"],
        "max_abs_difference": float(np.abs(old - new).max()),
    }


def batched(s: learner.Sized, batch: int, n_rounds: int, calls: int) -> dict[str, Any]:
    """`batch` chunks in one call, as an update samples a' (B) and V^π's chunks (B·M):
    step by step against `FlowPolicy.sample` (no_grad), as the learner calls it."""
    g = torch.Generator().manual_seed(2)
    state = torch.randn(batch, s.obs.dim, generator=g)
    row = torch.zeros(batch, dtype=torch.long)
    actor = s.learner.actor
    ms = rounds(
        {
            "step_by_step": lambda: step_by_step(actor, state, row, g),
            "cached": lambda: actor.sample(state, row, 1, g),
        },
        n_rounds,
        calls,
    )
    return {
        **{f"{k}_ms": v for k, v in ms.items()},
        "cached_vs_step_by_step": ms["cached"] / ms["step_by_step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--batches", type=int, nargs="*", default=[], help="also B chunks per call (128 256)"
    )
    args = parser.parse_args()
    s = learner.build(args.preset, DEFAULT_TASK, "cpu")
    report: dict[str, Any] = {
        "preset": args.preset,
        "sizes": s.describe(),
        "load_before": os.getloadavg()[0],
        "inference": {},
    }
    for n in args.threads:
        with torch_threads(n):
            report["inference"][f"{n}_threads"] = inference(s, args.rounds, args.calls)
            for b in args.batches:
                figures = batched(s, b, max(3, args.rounds // 3), 1)
                report["inference"][f"{n}_threads_batch_{b}"] = figures
    report["load_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
