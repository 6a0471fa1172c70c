"""The composed operator's success on the OGBench tasks, from reset, with no policy.

    MUJOCO_GL=osmesa python benchmarks/ogbench_operator.py --seeds 20 [--profile human]

Prints one JSON line per task: success rate, mean length of the successful episodes (the
noise-free oracle's is Eq. 14's C_fail, `aloe.envs.ogbench_tasks.OPERATOR_EPISODE_LENGTH`) and the
failure reasons. Needs the ogbench extra.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import numpy as np

from aloe.envs.metaworld import EnvConfig
from aloe.envs.ogbench import OGBenchEnv
from aloe.envs.ogbench_tasks import TASKS
from aloe.operators.profiles import make_operator
from aloe.operators.scripted import OperatorConfig


def run(task: str, seeds: range, profile: str, noise: float) -> dict[str, object]:
    env = OGBenchEnv(EnvConfig(task=task, max_steps=2 * TASKS[task].max_steps, c_fail=1.0))
    cfg = OperatorConfig(profile=profile, noise_std=noise)
    lengths, reasons, start = [], Counter(), time.perf_counter()
    for seed in seeds:
        op = make_operator(task, cfg, seed=seed)
        obs, _ = env.reset(seed=seed)
        env.hand_to("operator")
        info: dict[str, object] = {}
        for _ in range(env.max_steps):
            obs, _, term, trunc, info = env.step(op.act(obs))
            if term or trunc:
                break
        if info.get("success"):
            lengths.append(env.steps)
        else:
            reasons[str(info.get("failure_reason") or "time limit")] += 1
    return {
        "task": task,
        "profile": profile,
        "noise_std": noise,
        "episodes": len(seeds),
        "success": len(lengths) / len(seeds),
        "mean_length": float(np.mean(lengths)) if lengths else None,
        "failures": dict(reasons),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--profile", default="oracle", choices=("oracle", "human"))
    p.add_argument("--noise", type=float, default=0.0, help="oracle profile's noise_std")
    args = p.parse_args()
    for task in args.tasks.split(","):
        print(json.dumps(run(task, range(args.seeds), args.profile, args.noise)), flush=True)


if __name__ == "__main__":
    main()
