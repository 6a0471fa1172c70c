"""The inference cost of best-of-N chunk selection (`--aloe.best-of-n N`) against a plain chunk.

    python benchmarks/best_of_n_cost.py [--preset default] [--n 1 4 8 16] [--requests 30]

Untrained networks of the preset (inference cost does not depend on the weights), one
MetaWorld observation, one torch thread, on CPU or `--device cuda`. For each N, the time of
one chunk from `BestOfNPolicy` (N chunks of π sampled in one batch, every one valued by
the critic ensemble, the best returned) against the plain `FlowChunkPolicy` chunk, the
requests interleaved so that both see the same load. Prints one JSON object: the p50 and
mean milliseconds of each, their ratio, and the machine's load average while it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch

from aloe.algos.best_of_n import BestOfNPolicy
from aloe.config import preset
from aloe.envs.registry import make_env
from aloe.policies.chunk_policy import FlowChunkPolicy
from aloe.run import build_learner


def timed(policy: Any, obs: dict[str, Any]) -> float:
    start = time.perf_counter()
    policy.act_chunk(obs)
    return 1e3 * (time.perf_counter() - start)


def built(preset_name: str, device: str) -> tuple[Any, dict[str, Any]]:
    """An untrained learner of `preset_name` on one thread, and one observation of its task."""
    torch.set_num_threads(1)
    cfg = preset(preset_name)
    cfg.device = device
    cfg = cfg.resolved()
    learner = build_learner(cfg)
    obs, _ = make_env(cfg.env).reset(seed=0)
    return learner, obs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    learner, obs = built(args.preset, args.device)
    device = learner.device

    def plain() -> FlowChunkPolicy:
        return FlowChunkPolicy(learner.actor, version=0, exec_horizon=5, seed=0, device=device)

    out: dict[str, Any] = {"preset": args.preset, "device": str(device), "torch_threads": 1}
    load_before = os.getloadavg()[0]
    for n in args.n:
        base, best = plain(), BestOfNPolicy(plain(), learner.critic, n)
        for policy in (base, best):  # warm up
            timed(policy, obs)
        pairs = [(timed(base, obs), timed(best, obs)) for _ in range(args.requests)]
        one, picked = (np.array(p) for p in zip(*pairs, strict=True))
        out[f"n={n}"] = {
            "plain_p50_ms": round(float(np.median(one)), 2),
            "best_of_n_p50_ms": round(float(np.median(picked)), 2),
            "plain_mean_ms": round(float(one.mean()), 2),
            "best_of_n_mean_ms": round(float(picked.mean()), 2),
            "ratio_p50": round(float(np.median(picked) / np.median(one)), 2),
        }
    out["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    out["cpus"] = os.cpu_count()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
