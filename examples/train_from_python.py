"""Train, evaluate and query an ALOE run from Python, with custom logging per iteration.

    python examples/train_from_python.py [OUT_DIR]      # default runs/from-python

The config is `aloe train`'s, built in code: a preset, then fields set as flags set them
(`--iterations 2` is `cfg.iterations = 2`). It is checked as the command line checks it:
a bad value raises `aloe.errors.UsageError` naming it, before anything is written. The
smoke preset keeps this to about a minute on 2 CPU cores; "default" is the real job.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import aloe
from aloe.config import preset
from aloe.envs.registry import make_env
from aloe.errors import UsageError


def main(out: Path) -> None:
    cfg = preset("smoke")  # or "default": ~10–20 minutes on 2 CPU cores
    cfg.out = out
    cfg.seed = 1
    cfg.iterations = 2

    bad = preset("smoke")
    bad.eval_episodes = 0
    try:  # the command line's checks, before any work
        aloe.run_training(bad)
    except UsageError as e:
        print(f"refused as `aloe train` refuses it: {e}")

    log = out.with_suffix(".csv")  # custom logging: one CSV row per iteration

    def on_iteration(row: dict[str, Any]) -> None:
        new = not log.exists()
        with log.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["iteration", "success_rate", "human_steps", "wall_s"])
            writer.writerow(
                [row[k] for k in ("iteration", "success_rate", "human_steps", "wall_s")]
            )
        print(f"iteration {row['iteration']}: success {row['success_rate']:.2f}")

    history = aloe.run_training(cfg, on_iteration=on_iteration)
    print(
        f"trained {len(history)} iterations; BC {history[0]['success_rate']:.2f} → "
        f"final {history[-1]['success_rate']:.2f}; per-iteration log in {log}"
    )

    result = aloe.evaluate_run(out, episodes=4)  # also written to OUT/eval-basic.json
    low, high = result["success_ci95"]
    print(f"evaluation: success {result['success_rate']:.2f} (95 % CI {low:.2f}–{high:.2f})")

    run = aloe.load_run(out)  # the latest checkpoint
    obs, _ = make_env(run.config.env).reset(seed=0)  # the run's task, as the robot sees it
    state = obs["state"]
    chunks = run.sample(state, num_samples=4, seed=0)  # (4, h, A) action chunks from π
    value = run.value(state)  # one state in, one number out: V^π(s) (Eq. 10)
    print(f"π's chunks {chunks.shape}; V^π(s) = {value:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/from-python"))
