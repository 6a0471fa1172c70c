"""`aloe eval --run DIR --suite full`: every evaluation of issue 5 into eval.json and report.html.

    nominal        success, steps to success, throughput on the evaluation seeds (Appendix E)
    variants       the same seeds with unseen objects (variants.py), no fine-tuning
    perturbations  the same seeds under each disturbance (perturb.py)
    q_traces       Q_pess along a dataset episode (the latest with a takeover) and a rollout
    ope            the critic's accuracy against ground-truth Q^π and V^π (ope.py)
    action_ope     the critic's ranking of chunks at one state, the weights, and a run's
                   labels (RECAP's indicator) against the truth (action_ope.py, indicator.py)
    weights_by_source  which data the actor imitates: advantage weights by source (weights.py)
    weights_by_policy_outcome  the policy's chunks by how their fragment ended

Every condition uses the same seeds as `aloe eval` (EVAL_SEED + i), so `nominal` equals
what `aloe eval` reports for the same checkpoint, and conditions differ only in the change.
The task's row says which of the variants, perturbations and Q traces apply
(`aloe.envs.base.SuiteParts`); those that do not are listed in `not_run`. The OPE sections
restore stored steps as the row says (`aloe.evaluation.restore.make_restorer`).
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aloe.algos.table import ALGORITHMS
from aloe.durable import write_atomic
from aloe.envs.registry import backend_of, make_env
from aloe.envs.tasks import task_list
from aloe.errors import bad, require
from aloe.evaluation.action_ope import (
    ACTION_OPE_FILE,
    ActionOpeConfig,
    applies,
    not_applicable,
    plot_action_ope,
    run_action_ope,
)
from aloe.evaluation.metrics import speed_metrics
from aloe.evaluation.ope import OpeConfig, ValueFn, aloe_value_fn, plot_ope, run_ope
from aloe.evaluation.perturb import Perturbation, Perturber, default_perturbations
from aloe.evaluation.qtrace import critic_q_fn, default_episode, plot_run_episode, plot_run_rollout
from aloe.evaluation.rollout import rollout
from aloe.evaluation.run_report import write_report
from aloe.evaluation.weights import buffer_weights, weights_by_policy_outcome, weights_by_source
from aloe.nn import evaluating
from aloe.policies.base import ChunkPolicy
from aloe.rollout import StepHook
from aloe.run import load_run, read_run_config

EVAL_DIR = "eval"  # the suite's figures, under the run directory


@dataclass
class SuiteConfig:
    """Sample sizes of `aloe eval --suite full` (small ones make it a CI check)."""

    episodes: int = 20
    """Episodes per condition (nominal, each variant, each perturbation)."""
    seed: int = 1_000_000
    """Seed of the first episode; episode i uses seed + i (`aloe eval`'s EVAL_SEED)."""
    variants: bool = True
    """Evaluate the unseen-object variants."""
    perturbations: list[Perturbation] = field(default_factory=default_perturbations)
    """Disturbances to evaluate under; empty = none."""
    ope: OpeConfig = field(default_factory=OpeConfig)
    """Off-policy evaluation accuracy; ope.pairs = 0 skips it."""
    action_ope: ActionOpeConfig = field(default_factory=ActionOpeConfig)
    """Action-level OPE (chunks ranked at one state); action_ope.states = 0 skips it."""
    progress: bool = True
    """Report each condition on stderr as it finishes."""


def evaluate_condition(
    env: Any,
    policy: ChunkPolicy,
    seeds: Sequence[int],
    make_hook: Callable[[int], StepHook | None] | None = None,
) -> dict[str, Any]:
    """One episode per seed (under a fresh hook each) of `env` (an `EpisodeEnv`; a hook is
    MetaWorld's); speed metrics and failure counts."""
    lengths = []
    successes = []
    reasons = Counter[str]()
    for seed in seeds:
        hook = make_hook(seed) if make_hook else None
        try:
            traj = rollout(env, policy, seed, hook=hook)
        finally:
            if isinstance(hook, Perturber):
                hook.finish(env)
        lengths.append(len(traj))
        successes.append(traj.success)
        if traj.failure_reason:
            reasons[traj.failure_reason.split(":")[0]] += 1
    out = speed_metrics(lengths, successes, env.control_period).as_dict()
    return {**out, "failure_reasons": dict(reasons.most_common())}


def run_suite(run_dir: Path, cfg: SuiteConfig) -> dict[str, Any]:
    """Run every evaluation on `run_dir`'s latest checkpoint; write eval.json and report.html
    (a report that cannot be written is a warning: eval.json holds the results)."""
    run = load_run(run_dir, what="--run")
    env = make_env(run.config.env)
    row = backend_of(run.config.task)
    parts = row.suite
    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    # reseeded per episode from (cfg.seed, episode seed), exactly as in `aloe eval`
    policy = run.acting_policy(seed=cfg.seed)
    out: dict[str, Any] = {
        "suite": "full",
        "task": run.config.task,
        "algo": run.config.algo,
        "iteration": run.iteration,
        "seeds": [seeds[0], seeds[-1]] if seeds else [],
    }
    out["nominal"] = _log(cfg, "nominal", evaluate_condition(env, policy, seeds))
    out["variants"] = {}
    out["perturbations"] = {}
    out["q_traces"] = []
    applies = {
        "variants": parts.variants is not None,
        "perturbations": parts.perturbations,
        "q_traces": parts.q_traces,
    }
    why = f"not a part of {row.name}'s suite ({run.config.task} is a {row.name} task)"
    not_run = {part: why for part, ok in applies.items() if not ok}
    if not_run:
        out["not_run"] = not_run
    if parts.variants is not None and cfg.variants:
        for v in parts.variants.of(run.config.task)[1:]:
            with parts.variants.applied(env, v):
                metrics = evaluate_condition(env, policy, seeds)
            out["variants"][v.name] = _log(cfg, v.name, {"description": v.description, **metrics})
    for p in cfg.perturbations if parts.perturbations else []:
        metrics = evaluate_condition(env, policy, seeds, _perturber(env, p))
        out["perturbations"][p.name] = _log(cfg, p.name, {"description": p.description, **metrics})
    figures = run_dir / EVAL_DIR
    if parts.q_traces:
        out["q_traces"] = _q_traces(run, figures, cfg.seed)
    out["ope"] = _ope(run, cfg.ope, figures)
    out["action_ope"] = _action_ope(run, cfg.action_ope, figures, cfg.progress)
    if ALGORITHMS[run.config.algo].weighted:
        bw = buffer_weights(run)
        out["weights_by_source"] = weights_by_source(run, bw=bw)
        out["weights_by_policy_outcome"] = weights_by_policy_outcome(run, bw=bw)
    text = json.dumps(_json_safe(out), indent=1)
    (run_dir / "eval.json").write_text(text)
    report = write_report(run_dir, "aloe eval")
    out["report"] = str(report) if report else None
    return out


def _perturber(env: Any, p: Perturbation) -> Callable[[int], StepHook | None]:
    return lambda seed: Perturber(env, p, seed)


def _q_traces(run: Any, figures: Path, seed: int) -> list[str]:
    if run.value_kind != "q":  # a trained chunked Q
        return []
    episode = default_episode(run.root / "dataset")
    paths = [
        plot_run_episode(run, episode, figures / f"qtrace-episode-{episode}.png"),
        plot_run_rollout(run, seed, figures / f"qtrace-rollout-{seed}.png"),
    ]
    return [str(p.relative_to(run.root)) for p in paths]


def _ope(run: Any, cfg: OpeConfig, figures: Path) -> dict[str, Any] | None:
    if cfg.pairs <= 0:
        return None
    has_critic = run.value_kind == "q"
    result = run_ope(
        run,
        cfg,
        q_fn=critic_q_fn(run.critic, run.device) if has_critic else None,
        value_fn=aloe_value_fn(run, cfg.value_samples) if has_critic else None,
        value_fns=state_value_fns(run),
    )
    figures.mkdir(parents=True, exist_ok=True)
    scatter = plot_ope(result, figures / "ope-scatter.png")
    return {**result.as_dict(), "scatter": str(Path(scatter).relative_to(run.root))}


def _action_ope(
    run: Any, cfg: ActionOpeConfig, figures: Path, progress: bool
) -> dict[str, Any] | None:
    """The action-level OPE's eval.json entry: its scores, or why it does not apply."""
    if cfg.states <= 0:
        return None
    if not applies(run.algorithm, run.config):
        return {"applicable": False, "reason": not_applicable(run)}
    result = run_action_ope(run, cfg)
    figures.mkdir(parents=True, exist_ok=True)
    figure = plot_action_ope(result, figures / "action-ope.png")
    out = {**result.as_dict(), "figure": str(Path(figure).relative_to(run.root))}
    if progress:
        print(
            json.dumps({"condition": "action_ope", **_json_safe(action_ope_brief(out))}),
            file=sys.stderr,
        )
    return out


def action_ope_brief(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """The action-level OPE's headline numbers (overall and per source), for printing."""
    if not entry or not entry.get("applicable"):
        return entry
    return {
        **entry["counts"],
        "wall_s": round(entry["wall_s"], 1),
        **_headline(entry),
        "by_source": {s: _headline(v) for s, v in entry["by_source"].items()},
    }


def _headline(scores: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "within_state_spearman",
        "constant_truth",
        "sign_accuracy",
        "true_advantage_positive",
        "weights_pearson",
        "weights_spearman",
        "indicator_agreement",
        "indicator_chance",
        "indicator_sign_agreement",
        "indicator_n",
    )
    return {k: scores[k] for k in keys if k in scores}


def state_value_fns(run: Any) -> dict[str, ValueFn]:
    """Learned state values V(s) to score against ground-truth V^π, by name.

    A learner whose value is a state value (`value_kind` "state": AWR's, PPO+SBC's, RECAP's
    with `advantage value`) carries it as `value(state, task_index)`; any run object may
    instead offer `state_value(states (B, S)) -> (B,)`.
    """
    algo = run.config.algo
    fn = getattr(run, "state_value", None)
    if callable(fn):
        return {f"{algo} V(s)": fn}
    learner = getattr(run, "learner", None)
    if run.value_kind == "state" and callable(getattr(learner, "value", None)):
        return {f"{algo} V(s)": learner_value_fn(learner)}
    return {}


def learner_value_fn(learner: Any, batch: int = 256) -> ValueFn:
    """A learner's `value(state, task_index)` as a numpy function, in eval mode."""

    @torch.no_grad()
    def value(states: np.ndarray) -> np.ndarray:
        out = []
        with evaluating(learner.critic):
            for i in range(0, len(states), batch):
                s = torch.as_tensor(
                    states[i : i + batch], dtype=torch.float32, device=learner.device
                )
                tasks = torch.zeros(len(s), dtype=torch.long, device=learner.device)
                out.append(learner.value(s, tasks).cpu().numpy())
        return np.concatenate(out)

    return value


def _log(cfg: SuiteConfig, name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    if cfg.progress:
        brief = {k: metrics[k] for k in ("success_rate", "throughput", "mean_steps_to_success")}
        print(json.dumps({"condition": name, **_json_safe(brief)}), file=sys.stderr)
    return metrics


def _json_safe(obj: Any) -> Any:
    """NaN and inf become null, recursively: eval.json is valid JSON."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _check_state_run(run_dir: Path) -> None:
    """The suite replays states (restores, variants, OPE): single-task state runs that
    recorded the simulator's state only."""
    cfg = read_run_config(run_dir)
    require(
        cfg.obs == "state" and len(task_list(cfg.task)) == 1,
        "--run",
        run_dir,
        f"--suite full evaluates single-task state runs; this one has obs={cfg.obs!r}, "
        f"task={cfg.task!r}: use --suite basic",
    )
    require(
        cfg.collect.record_sim_state,
        "--run",
        run_dir,
        "--suite full restores stored simulator states, and this run recorded none "
        "(collect.record_sim_state is off, as in a run from --demos): use --suite basic",
    )


def cmd_eval_action_ope(args: Any) -> int:
    """`aloe eval --suite action-ope` (args: `aloe.run_eval.EvalArgs`): the action-level OPE
    alone, on the latest checkpoint, into DIR/action_ope.json (written atomically, with the
    checkpoint's iteration); `aloe compare` runs it on each run it applies to (a chunked Q
    critic, or labels: `aloe.evaluation.action_ope.applies`)."""
    args.validate()
    require(
        args.action_ope_states >= 1,
        "--action-ope-states",
        args.action_ope_states,
        "must be >= 1 with --suite action-ope",
    )
    _check_state_run(Path(args.run))
    run = load_run(Path(args.run), what="--run")
    if not applies(run.algorithm, run.config):
        raise bad("--run", args.run, not_applicable(run))
    cfg = ActionOpeConfig.from_args(args)
    out = _json_safe({"iteration": run.iteration, **run_action_ope(run, cfg).as_dict()})
    path = Path(args.run) / ACTION_OPE_FILE
    text = json.dumps(out, indent=1).encode()
    write_atomic(path, lambda f: f.write(text))
    print(
        json.dumps(
            {"iteration": run.iteration, **(action_ope_brief(out) or {}), "file": str(path)},
            indent=1,
        )
    )
    return 0


def cmd_eval_full(args: Any) -> int:
    """`aloe eval --suite full` (args: `aloe.run_eval.EvalArgs`)."""
    args.validate()
    _check_state_run(Path(args.run))
    ope = OpeConfig(pairs=args.ope_pairs, rollouts=args.ope_rollouts)
    action = ActionOpeConfig.from_args(args)
    cfg = SuiteConfig(
        episodes=args.episodes,
        seed=args.seed,
        ope=ope,
        action_ope=action,
        progress=args.progress is not False,
    )
    out = run_suite(Path(args.run), cfg)
    brief = {k: out[k] for k in ("task", "algo", "iteration", "nominal")}
    brief["action_ope"] = action_ope_brief(out["action_ope"])
    print(
        json.dumps(
            _json_safe(
                {**brief, "eval": str(Path(args.run) / "eval.json"), "report": out["report"]}
            ),
            indent=1,
        )
    )
    return 0
