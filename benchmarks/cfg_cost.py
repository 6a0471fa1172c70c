"""The inference cost of RECAP's classifier-free guidance (`--recap.cfg-beta β`, β ≠ 1)
against a plain chunk.

    python benchmarks/cfg_cost.py [--preset default] [--beta 2] [--requests 50]

Untrained networks of the preset (inference cost does not depend on the weights), one
MetaWorld observation, one torch thread, on CPU or `--device cuda`. Three actors of the same
weights, each a `FlowChunkPolicy` as collection and evaluation run it: plain (the compact
actor without an indicator, what a non-RECAP run samples), RECAP at β = 1 (conditioned on
"positive": one forward per flow step) and RECAP at β (both branches in one batch of 2B per
flow step). Requests interleaved so that all three see the same load. Prints one JSON
object: p50 and mean milliseconds of each, the ratios to plain, and the load average.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from typing import Any

import numpy as np
import torch
from best_of_n_cost import built, timed  # this folder's: the setup, one request's ms

from aloe.policies.chunk_policy import FlowChunkPolicy
from aloe.policies.indicator import POSITIVE, Guidance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--beta", type=float, default=2.0)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    learner, obs = built(args.preset, args.device)
    actor = learner.actor  # the compact actor of an ALOE run: no indicator
    device = next(actor.parameters()).device
    actors = {"plain": actor}
    for name, beta in (("beta_1", 1.0), ("cfg", args.beta)):
        conditioned = copy.deepcopy(actor)
        conditioned.use_indicator(Guidance(POSITIVE, beta))
        actors[name] = conditioned
    policies = {
        name: FlowChunkPolicy(a, version=0, exec_horizon=5, seed=0, device=device)
        for name, a in actors.items()
    }
    for policy in policies.values():  # warm up
        timed(policy, obs)
    times: dict[str, list[float]] = {name: [] for name in policies}
    for _ in range(args.requests):
        for name, policy in policies.items():
            times[name].append(timed(policy, obs))
    load_before = os.getloadavg()[0]
    p50 = {name: float(np.median(t)) for name, t in times.items()}
    out: dict[str, Any] = {
        "preset": args.preset,
        "beta": args.beta,
        "device": str(device),
        "torch_threads": 1,
        "requests": args.requests,
        **{f"{name}_p50_ms": round(v, 2) for name, v in p50.items()},
        **{f"{name}_mean_ms": round(float(np.mean(t)), 2) for name, t in times.items()},
        "ratio_p50_beta_1": round(p50["beta_1"] / p50["plain"], 2),
        "ratio_p50_cfg": round(p50["cfg"] / p50["plain"], 2),
        "load_average_1min": round(load_before, 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
