"""`aloe eval`: a run's latest checkpoint evaluated without the operator (the basic suite
here; the full and action-level OPE suites in `aloe.evaluation.suite`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aloe.collect import evaluate
from aloe.envs.registry import make_env, simulated
from aloe.errors import require
from aloe.evaluation.action_ope import ActionOpeConfig
from aloe.evaluation.metrics import wilson_interval
from aloe.evaluation.suite import cmd_eval_action_ope, cmd_eval_full
from aloe.progress import Progress
from aloe.run import load_run, read_run_config, require_run_dir
from aloe.train import EVAL_SEED, json_safe


@dataclass
class EvalArgs:
    """Evaluate a run's latest checkpoint without the operator."""

    run: Path
    """Run directory written by `aloe train`."""
    episodes: int = 50
    """Evaluation episodes."""
    seed: int = EVAL_SEED
    """Seed of the first episode; episode i uses seed + i."""
    batch: int = 10
    """Basic suite: episodes played together, one policy call per chunk for all of them
    (as `aloe train --eval-batch`; 1 = one at a time)."""
    suite: Literal["basic", "full", "action-ope"] = "basic"
    """basic: success on the seeds; full: also throughput, unseen objects, perturbations,
    Q traces, OPE accuracy and action-level OPE (aloe.evaluation), into eval.json and
    DIR/report.html; action-ope: the action-level OPE alone (runs with a chunked Q critic
    or labels: ALOE, RECAP), into DIR/action_ope.json."""
    ope_pairs: int = 32
    """Full suite: (state, chunk) pairs of the OPE ground truth (0 skips it)."""
    ope_rollouts: int = 4
    """Full suite: Monte-Carlo rollouts per pair."""
    action_ope_states: int = 24
    """Full and action-ope suites: buffer states of the action-level OPE, stratified by
    source (0 skips it in the full suite)."""
    action_ope_chunks: int = 7
    """Full and action-ope suites: chunks sampled from π per state, ranked with the data
    chunk."""
    action_ope_rollouts: int = 2
    """Full and action-ope suites: Monte-Carlo rollouts per chunk of the action-level OPE."""
    progress: Progress = None
    """Progress on stderr: neither flag, bars when stderr is a terminal, else one line per
    phase; --progress, bars; --no-progress, neither (aloe.progress)."""

    def validate(self) -> None:
        """Every field, then the run directory: a UsageError before anything is loaded."""
        require(self.episodes >= 1, "--episodes", self.episodes, "must be >= 1")
        require(self.seed >= 0, "--seed", self.seed, "must be >= 0")
        require(self.batch >= 1, "--batch", self.batch, "must be >= 1")
        require(self.ope_pairs >= 0, "--ope-pairs", self.ope_pairs, "must be >= 0 (0 skips OPE)")
        require(self.ope_rollouts >= 1, "--ope-rollouts", self.ope_rollouts, "must be >= 1")
        ActionOpeConfig.from_args(self).check(flags=True)
        require_run_dir(self.run, "--run")
        task = read_run_config(self.run).task
        require(
            simulated(task),
            "--run",
            self.run,
            f"its --task {task} has no simulator to evaluate in: its success per iteration is "
            "the robot's (metrics.jsonl, report.html); `aloe robot --episodes N --no-record` "
            "plays its policy alone",
        )


def cmd_eval(args: EvalArgs) -> int:
    args.validate()
    if args.suite == "full":
        return cmd_eval_full(args)
    if args.suite == "action-ope":
        return cmd_eval_action_ope(args)
    print(json.dumps(evaluate_run(args), indent=1))
    return 0


BASIC_EVAL = "eval-basic.json"  # the basic suite's results; the full suite's are eval.json


def evaluate_run(args: EvalArgs) -> dict[str, Any]:
    """The basic suite on a run's latest checkpoint: success rate with its Wilson interval,
    steps to success; written to the run's eval-basic.json (never over the full suite's
    eval.json) and returned. `args` is validated as `aloe eval` validates its flags."""
    args.validate()
    run = load_run(args.run, what="--run")
    env = make_env(run.config.env)
    seeds = [args.seed + i for i in range(args.episodes)]
    result = evaluate(
        env, run.acting_policy(seed=args.seed), seeds, progress=args.progress, batch=args.batch
    )
    ci = wilson_interval(sum(result.successes), result.episodes)
    out = json_safe(
        {
            "iteration": run.iteration,
            **result.as_dict(),
            "success_ci95": list(ci),
            "seed": args.seed,
        }
    )
    tmp = args.run / f"{BASIC_EVAL}.tmp"
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, args.run / BASIC_EVAL)
    return out
