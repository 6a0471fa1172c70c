"""Training and evaluation from Python, with the command line's checks:

    cfg = aloe.config.preset("smoke")               # a TrainConfig; set fields as flags do
    cfg.out = Path("runs/mine")
    cfg.demos = Path("data/recorded")               # optional: a LeRobotDataset v3 (or a store)
                                                    #   as the demonstrations (docs/demos.md)
    history = aloe.run_training(cfg, on_iteration=print)
    result = aloe.evaluate_run("runs/mine", episodes=20)
    run = aloe.load_run("runs/mine")

A mistake in the config or a path raises `aloe.errors.UsageError` (a ValueError) with the
one-line message `aloe train` or `aloe eval` would print, before anything is written.
examples/train_from_python.py is the whole walk-through, run by the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aloe.config import TrainConfig
from aloe.run_eval import EvalArgs
from aloe.run_eval import evaluate_run as basic_eval
from aloe.train import EVAL_SEED, train


def run_training(
    cfg: TrainConfig,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
) -> list[dict[str, Any]]:
    """`aloe train` on `cfg` (written to `cfg.out`), or with `resume` continue the run in
    `cfg.out`: the same checks, the same run directory and report. `on_iteration` receives
    each iteration's metrics.jsonl row once its checkpoint is saved. Returns every row."""
    return train(cfg, resume=resume, on_iteration=on_iteration)


def evaluate_run(
    run_dir: str | Path,
    episodes: int = 50,
    seed: int | None = None,
    batch: int = 10,
    progress: bool | None = False,
) -> dict[str, Any]:
    """`aloe eval --run DIR` (the basic suite) on the run's latest checkpoint: success rate
    with its 95 % Wilson interval and steps to success, also written to DIR/eval-basic.json.
    `seed` defaults to the evaluation seeds `aloe train` uses."""
    args = EvalArgs(
        run=Path(run_dir),
        episodes=episodes,
        seed=EVAL_SEED if seed is None else seed,
        batch=batch,
        progress=progress,
    )
    return basic_eval(args)
