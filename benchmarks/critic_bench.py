"""Critic benchmark (issue 32): how well does a critic variant rank the chunks at one state?

A buffer is a finished run (its store and its trained actor π, both fixed) plus a ground-truth
file. `build` draws N buffer states, stratified by source (demo, human, policy), puts C chunks
of π beside the data chunk at each, and gets every chunk's true Q^π from R restored rollouts
(aloe.evaluation.action_ope, the operator's watch replayed as collection ran it), once, into
BUFFER/truth.npz (arrays and a JSON header; never pickled). `score` trains a fresh critic of
one variant from scratch on that buffer (TD targets with a' from the fixed π, the run's config
with `section.field=value` overrides) and prints one markdown table row:

  rho demo/human/policy  within-state Spearman of Q_pess (Eq. 9) against the truth over each
                         state's C + 1 chunks, averaged over the source's states
  sign                   sign accuracy of Â = Q_pess(s, a_data) − mean_c Q_pess(s, a_c)
  spread                 the ensemble's spread: member std of Q, averaged over every chunk
  regret@C               best-of-C regret, mean_c Q^π(s, a_c) − Q^π(s, a_j*) with
                         j* = argmax_c Q_pess over the C chunks of π, averaged over states.
                         NEGATIVE IS GOOD: the critic's pick beats a random chunk of π by
                         that much true return; 0 is chance; the oracle's floor is in brackets
  ceiling                the truth's split-half reliability at policy states: within-state
                         Spearman between the mean of the even and of the odd rollouts
  ms/step                wall time per critic update (sampling a' included)

`score --privileged` is the sim-only upper bound of issue 32's item 2: the critic also reads
the operator's replayed stall counters at every buffer row (no robot has them).

`split` measures issue 32's item 2 on a buffer: how much of the truth's variance at policy
states the replayed stall counters (StallWatch best/idle) and time in the episode explain.

    python benchmarks/critic_bench.py build /tmp/critic_bench/pick-place --run RUN
    python benchmarks/critic_bench.py score /tmp/critic_bench/pick-place default --header
    python benchmarks/critic_bench.py score /tmp/critic_bench/pick-place lr optim.critic_lr=1e-3
    python benchmarks/critic_bench.py split /tmp/critic_bench/pick-place

docs/results.md ("Critic benchmark") gives the buffers' rebuild commands and the figures.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from aloe import data as D
from aloe.evaluation.action_ope import (
    ActionOpeConfig,
    Candidates,
    critic_members,
    load_truth,
    run_action_ope,
    save_truth,
)
from aloe.evaluation.action_scores import best_of_n_regret, score_states, split_half_spearman

TRUTH = "truth.npz"
COLUMNS = (
    "buffer",
    "variant",
    "steps",
    "rho demo",
    "rho human",
    "rho policy",
    "sign",
    "spread",
    "regret@C [oracle]",
    "ceiling policy",
    "ms/step",
)


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit status 2."""
    print(f"critic_bench: error: {message}", file=sys.stderr)
    raise SystemExit(2)


# build


def stall_of(operator: Any) -> Any:
    """The operator's StallWatch, or None: its own (scripted, composed) or that of the plan a
    simulated person carries out, through any wrappers of the plan (OGBench's four-DoF one)."""
    from aloe.operators.scripted import StallWatch

    obj = operator
    while obj is not None:
        stall = getattr(obj, "stall", None)
        if isinstance(stall, StallWatch):
            return stall
        obj = getattr(obj, "plan", None)
    return None


class Recording:
    """An operator's watch that keeps the last task progress it was shown: at a policy row
    past its fragment's start, the progress of the row's own state."""

    def __init__(self, operator: Any) -> None:
        self.operator = operator
        self.progress = math.nan

    def start_watching(self) -> None:
        self.operator.start_watching()

    def watch(self, obs: Any, info: Any) -> str | None:
        self.progress = float(info.get("progress", math.nan))
        return cast(str | None, self.operator.watch(obs, info))


def replayed_counters(run: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The stall watch's best and idle where each row began, replayed as the truth's rollouts
    start (from the policy fragment's start at policy rows, fresh elsewhere; best = −inf
    before the watch has seen a step), and the task progress there (NaN where unseen)."""
    from aloe.envs.registry import make_env
    from aloe.evaluation.ope import load_buffer
    from aloe.operators.profiles import make_operator

    rc = run.config
    _, restorer = load_buffer(run)
    env = make_env(rc.env)
    out = {k: np.full(len(rows), v) for k, v in (("best", -np.inf), ("idle", 0.0))}
    out["progress"] = np.full(len(rows), math.nan)
    for i, row in enumerate(rows):
        watch = Recording(make_operator(rc.task, rc.operator))
        restorer.restore(env, int(row), watch)
        stall = stall_of(watch.operator)
        if stall is not None:
            out["best"][i] = stall.best
            out["idle"][i] = stall.idle
        out["progress"][i] = watch.progress
    return out


def fragment_steps(frames: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Steps since the row's fragment (episode, fragment index) began."""
    episode = frames[D.EPISODE]
    fragment = frames[D.FRAGMENT]
    out = np.zeros(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        k = int(row)
        while k > 0 and episode[k - 1] == episode[row] and fragment[k - 1] == fragment[row]:
            k -= 1
        out[i] = int(row) - k
    return out


def build(args: argparse.Namespace) -> None:
    from aloe.evaluation.ope import load_buffer
    from aloe.run import load_run

    if args.rollouts < 2 or args.rollouts % 2:
        fail(f"--rollouts {args.rollouts}: must be even and >= 2 (the split-half ceiling)")
    run = load_run(args.run, what="--run")
    args.buffer.mkdir(parents=True, exist_ok=True)
    cfg = ActionOpeConfig(
        states=args.states, chunks=args.chunks, rollouts=args.rollouts, seed=args.seed
    )
    res = run_action_ope(run, cfg)
    frames, _ = load_buffer(run)
    rows = res.cands.rows
    counters = replayed_counters(run, rows)
    arrays = {
        "rows": rows,
        "source": res.cands.source.astype(str),
        "states": res.cands.states,
        "chunks": res.cands.chunks,
        "valid": res.cands.valid,
        "truth": res.truth,
        "exact": res.exact,
        "frame": np.asarray(frames[D.FRAME])[rows],
        "fragment_steps": fragment_steps(frames, rows),
        "stall_best": counters["best"],
        "stall_idle": counters["idle"],
        "progress": counters["progress"],
    }
    meta = {
        "run": str(Path(args.run).resolve()),
        "task": run.config.task,
        "operator": dataclasses.asdict(run.config.operator),
        "action_level": bool(run.config.env.failures.action_level),
        "max_steps": run.config.env.max_steps,
        "gamma": res.gamma,
        "exec_horizon": res.exec_horizon,
        "ope": dataclasses.asdict(cfg),
        "buffer_steps": len(frames[D.SOURCE]),
        "buffer_sources": {s: int((frames[D.SOURCE] == s).sum()) for s in D.SOURCES},
        "episodes": int(len(np.unique(frames[D.EPISODE]))),
        "wall_s": round(res.wall_s, 1),
    }
    save_truth(args.buffer / TRUTH, arrays, meta)
    print(json.dumps({**meta, "restore_exact": float(res.exact.mean())}, default=str))


# score


def overridden(cfg: Any, overrides: list[str]) -> Any:
    """A copy of cfg with `section.field=value` items set (the field's type parses value)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, eq, value = item.partition("=")
        *path, name = key.split(".")
        if not eq or not path:
            fail(f"override {item!r}: expected section.field=value")
        obj = cfg
        for part in path:
            obj = getattr(obj, part, None)
        if obj is None or not hasattr(obj, name):
            fail(f"override {item!r}: the run's config has no field {key!r}")
        setattr(obj, name, parsed(value, getattr(obj, name), item))
    return cfg


def parsed(value: str, old: Any, item: str) -> Any:
    """value as the type of the field's current value (JSON when that is None)."""
    try:
        if isinstance(old, bool):
            return {"true": True, "false": False, "1": True, "0": False}[value.lower()]
        if isinstance(old, str):
            return value
        if old is None:
            return json.loads(value)
        return type(old)(value)
    except (KeyError, ValueError, TypeError):
        fail(f"override {item!r}: {value!r} is not a {type(old).__name__}")


def load_buffer_truth(buffer: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if not (buffer / TRUTH).is_file():
        fail(f"{buffer}: no {TRUTH}; build it first (critic_bench.py build {buffer} --run RUN)")
    return load_truth(buffer / TRUTH)


def candidates(
    arrays: dict[str, np.ndarray], frames: Any, cfg: Any, clock: np.ndarray | None
) -> Candidates:
    """The saved states and chunks, their data chunks (and clock) as the sampler builds them."""
    from aloe.datasets.sampler import ChunkSampler

    rows = arrays["rows"]
    sampler = ChunkSampler(
        frames,
        horizon=cfg.horizon,
        gamma=cfg.optim.gamma,
        time_limit=cfg.clock_limit(),
        clock=clock,
    )
    batch = sampler.chunks_at(rows)
    return Candidates(
        rows, arrays["source"], arrays["states"], arrays["chunks"], arrays["valid"], batch
    )


def scores(q_members: np.ndarray, truth: np.ndarray, source: np.ndarray) -> dict[str, Any]:
    """The row's figures from the critic's (K, N, C + 1) and the truth (N, C + 1, R)."""
    q_pess = q_members.min(axis=0)  # Eq. 9
    q_true = truth.mean(axis=-1)
    rho = {
        s: score_states(q_pess[source == s], q_true[source == s])["within_state_spearman"]
        for s in D.SOURCES
        if (source == s).any()
    }
    ceiling = split_half_spearman(truth)
    regret = best_of_n_regret(q_pess, q_true)
    oracle = q_true[:, 1:].mean(1) - q_true[:, 1:].max(1)
    policy = source == "policy"
    return {
        "rho": rho,
        "sign": score_states(q_pess, q_true)["sign_accuracy"],
        "spread": float(q_members.std(axis=0).mean()),
        "regret": float(regret.mean()),
        "regret_by_source": {s: float(regret[source == s].mean()) for s in rho},
        "regret_oracle": float(oracle.mean()),
        "ceiling": {s: _nanmean(ceiling[source == s]) for s in rho},
        "ceiling_policy": _nanmean(ceiling[policy]) if policy.any() else math.nan,
    }


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else math.nan


def table_row(buffer: str, variant: str, steps: int, s: dict[str, Any], ms: float) -> str:
    rho = [f"{s['rho'].get(src, math.nan):.2f}" for src in ("demo", "human", "policy")]
    cells = [buffer, variant, str(steps), *rho, f"{s['sign']:.2f}", f"{s['spread']:.2f}"]
    cells += [f"{s['regret']:.2f} [{s['regret_oracle']:.2f}]", f"{s['ceiling_policy']:.2f}"]
    return "| " + " | ".join([*cells, f"{ms:.0f}"]) + " |"


COUNTERS = "counters.npz"


def privileged_features(buffer: Path, run: Any, frames: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 2) for every buffer row: the operator's stall watch where the row began, replayed
    as the truth's rollouts start it (from the policy fragment's start at policy rows; a
    fresh watch, zeros, at demo and human rows): idle / patience and the gap of the progress
    to its best / 10. The sim-only privileged arm (an asymmetric critic that reads the
    operator's counters, which no robot has): issue 32 item 2's upper bound. Cached in
    BUFFER/counters.npz."""
    path = buffer / COUNTERS
    n = len(frames[D.SOURCE])
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if z["features"].shape == (n, 2):
                return np.asarray(z["features"])
    rows = np.flatnonzero(np.asarray(frames[D.SOURCE]) == "policy")
    c = replayed_counters(run, rows)
    seen = np.isfinite(c["best"]) & np.isfinite(c["progress"])
    gap = np.where(seen, c["best"] - np.where(seen, c["progress"], 0.0), 0.0)
    features = np.zeros((n, 2), dtype=np.float32)
    features[rows, 0] = c["idle"] / max(1, run.config.operator.patience)
    features[rows, 1] = np.clip(gap, 0.0, 10.0) / 10.0
    np.savez(path, features=features)
    return features


def score(args: argparse.Namespace) -> None:
    from aloe.algos.aloe import fit_buffer_normalizer
    from aloe.datasets.sampler import ChunkSampler
    from aloe.envs.registry import largest_failure_cost
    from aloe.evaluation.ope import load_buffer
    from aloe.evaluation.qtrace import critic_q_fn
    from aloe.run import build_learner, load_run

    arrays, meta = load_buffer_truth(args.buffer)
    run = load_run(meta["run"], what=f"{args.buffer}'s run")
    cfg = overridden(run.config, args.overrides)
    if args.privileged:  # the counters ride in the clock's place
        cfg.critic.time_features = True
    cfg.validate()
    torch.manual_seed(args.seed)
    norm = run.critic.state_norm
    c_fail = largest_failure_cost(cfg.env, run.obs.tasks)  # the HL-Gauss bins' span
    learner: Any = build_learner(
        cfg, norm.mean.numpy(), norm.std.numpy(), obs=run.obs, c_fail=c_fail
    )
    learner.actor = run.actor  # the fixed, trained policy: a' ~ π of the finished run
    learner.generator.manual_seed(args.seed)
    frames, _ = load_buffer(run)
    clock = privileged_features(args.buffer, run, frames) if args.privileged else None
    fit_buffer_normalizer(learner, frames)
    sampler = ChunkSampler(
        frames,
        horizon=cfg.horizon,
        gamma=cfg.optim.gamma,
        seed=args.seed,
        time_limit=cfg.clock_limit(),
        clock=clock,
    )
    cands = candidates(arrays, frames, cfg, clock)
    start = time.perf_counter()
    for _ in range(args.steps):
        learner.critic_step(sampler.sample(cfg.optim.batch_size))
    ms = 1e3 * (time.perf_counter() - start) / max(1, args.steps)
    q = critic_members(critic_q_fn(learner.critic, learner.device), cands)
    s = scores(q, arrays["truth"], arrays["source"])
    if args.header:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
    print(table_row(args.buffer.name, args.variant, args.steps, s, ms), flush=True)
    if args.jsonl:
        record = {"buffer": str(args.buffer), "variant": args.variant, "steps": args.steps}
        record |= {"overrides": args.overrides, "ms_per_step": ms, **s}
        with open(args.jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")


# split


def r_squared(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(R², adjusted R²) of the least-squares fit y ≈ [1, x] β; x (n, p)."""
    x = np.column_stack([np.ones(len(y)), x])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0:
        return math.nan, math.nan
    r2 = 1 - float(((y - x @ beta) ** 2).sum()) / total
    n, p = x.shape
    return r2, 1 - (1 - r2) * (n - 1) / (n - p) if n > p else math.nan


def between_bins(bins: np.ndarray, y: np.ndarray) -> float:
    """η²: the variance of y between the bins' means over its total variance."""
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0:
        return math.nan
    between = sum(
        (bins == b).sum() * (y[bins == b].mean() - y.mean()) ** 2 for b in np.unique(bins)
    )
    return float(between) / total


def variance_parts(truth: np.ndarray) -> dict[str, float]:
    """Shares of the rollout returns' variance (N, C + 1, R): between states, between the
    chunks of a state, and between the rollouts of a chunk (π's and the operator's noise)."""
    total = truth.var()
    state = truth.mean(axis=(1, 2))
    chunk = truth.mean(axis=2)
    return {
        "between_states": float(state.var() / total),
        "between_chunks": float((chunk - state[:, None]).var() / total),
        "rollout_noise": float((truth - chunk[..., None]).var() / total),
    }


MODELS = {  # regressors of V^π at a state: what the critic sees, then what it does not
    "counters+time": ("idle", "best", "t"),
    "progress": ("progress",),
    "progress+counters": ("progress", "idle", "gap"),
    "progress+time": ("progress", "t"),
    "progress+counters+time": ("progress", "idle", "gap", "t"),
}


def split_features(arrays: dict[str, np.ndarray], m: np.ndarray, meta: dict[str, Any]) -> Any:
    """The per-state regressors of `MODELS` at the states `m`: the replayed counters (idle
    in units of the patience; best and the gap best − progress, 0 before the watch saw a
    step), time in the episode / the limit, and the row's task progress (visible in the
    state; where the replay did not show it, at a fragment's first step, the lowest seen)."""
    best = arrays["stall_best"][m]
    progress = arrays["progress"][m]
    seen = np.isfinite(best)
    fill = np.nanmin(progress) if np.isfinite(progress).any() else 0.0
    progress = np.where(np.isfinite(progress), progress, fill)
    return {
        "idle": arrays["stall_idle"][m] / max(1, meta["operator"]["patience"]),
        "best": np.where(seen, best, 0.0),
        "gap": np.where(seen, best - progress, 0.0),
        "t": arrays["frame"][m] / meta["max_steps"],
        "progress": progress,
    }


def split_source(arrays: dict[str, np.ndarray], m: np.ndarray, meta: dict[str, Any]) -> Any:
    truth = arrays["truth"][m]
    f = split_features(arrays, m, meta)
    v = truth[:, 1:].mean(axis=(1, 2))  # V^π(s): the mean true Q of π's chunks
    idle = arrays["stall_idle"][m]
    idle_bin = terciles(idle)
    t_bin = terciles(f["t"])
    spread = truth.mean(axis=2).std(axis=1)  # chunks' true Q at a state: std
    return {
        "states": int(m.sum()),
        "variance_parts": variance_parts(truth),
        "r2_adj_r2": {  # the progress models only where the replay showed the progress
            name: r_squared(np.column_stack([f[k] for k in keys]), v)
            for name, keys in MODELS.items()
            if name == "counters+time" or np.isfinite(arrays["progress"][m]).any()
        },
        "eta2_idle_terciles": between_bins(idle_bin, v),
        "eta2_time_terciles": between_bins(t_bin, v),
        "idle_terciles": {
            str(b): {
                "n": int((idle_bin == b).sum()),
                "idle_max": float(idle[idle_bin == b].max()),
                "v_mean": float(v[idle_bin == b].mean()),
                "chunk_spread": float(spread[idle_bin == b].mean()),
            }
            for b in np.unique(idle_bin)
        },
        "idle_mean": float(idle.mean()),
    }


def terciles(x: np.ndarray) -> np.ndarray:
    """0, 1, 2: x's lower, middle and upper third (ties stay in one bin)."""
    return np.digitize(x, np.quantile(x, [1 / 3, 2 / 3]), right=True)


def split(args: argparse.Namespace) -> None:
    arrays, meta = load_buffer_truth(args.buffer)
    if "progress" not in arrays:
        fail(f"{args.buffer}: its truth file predates the split; rebuild it")
    out: dict[str, Any] = {"buffer": str(args.buffer), "patience": meta["operator"]["patience"]}
    for src in ("policy", "human", "demo"):
        m = arrays["source"] == src
        if m.sum() >= 3:
            out[src] = split_source(arrays, m, meta)
    print(json.dumps(rounded(out), indent=1))


def rounded(obj: Any) -> Any:
    """obj with every float rounded to 3 decimals (dicts, lists and tuples walked)."""
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v) for v in obj]
    return round(obj, 3) if isinstance(obj, float) else obj


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("build", help="draw states and write BUFFER/truth.npz from a run")
    b.add_argument("buffer", type=Path, help="the buffer's folder (outside git)")
    b.add_argument("--run", type=Path, required=True, help="a finished ALOE run directory")
    b.add_argument("--states", type=int, default=36, help="states N, a third per source")
    b.add_argument("--chunks", type=int, default=8, help="chunks C of π beside the data chunk")
    b.add_argument("--rollouts", type=int, default=4, help="rollouts R per chunk (even)")
    b.add_argument("--seed", type=int, default=0, help="the states' draw and π's noise")
    s = sub.add_parser("score", help="train a fresh critic on the buffer; print a table row")
    s.add_argument("buffer", type=Path, help="a folder written by `build`")
    s.add_argument("variant", help="the row's name")
    s.add_argument("overrides", nargs="*", help="section.field=value of the run's config")
    s.add_argument("--steps", type=int, default=2000, help="critic updates (default 2000)")
    s.add_argument("--seed", type=int, default=0, help="network init, batches and a' draws")
    s.add_argument("--header", action="store_true", help="print the table header first")
    s.add_argument("--jsonl", type=Path, help="append the row's full figures to this file")
    s.add_argument(
        "--privileged",
        action="store_true",
        help="sim-only upper bound: the critic reads the operator's replayed stall counters",
    )
    sp = sub.add_parser("split", help="issue 32 item 2: variance explained by counters/time")
    sp.add_argument("buffer", type=Path, help="a folder written by `build`")
    for q in (b, s, sp):
        q.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for name in ("states", "chunks", "steps", "threads"):
        if getattr(args, name, 1) < 1:
            fail(f"--{name} {getattr(args, name)}: must be >= 1")
    from aloe.errors import UsageError

    try:
        {"build": build, "score": score, "split": split}[args.mode](args)
    except UsageError as e:
        fail(str(e))


if __name__ == "__main__":
    main()
