"""Action-level OPE: does the critic rank the chunks available at one state as the simulator does?

`ope.py` scores the critic across states. The actor's weights (Eq. 10–11) rest on something
else: at one state s, which chunks are better than what π would do. For N buffer states,
stratified by the step's source (policy, human, demo), C + 1 chunks are ranked: C sampled
from π at s and the data chunk (the executed actions from s, cut at the fragment's end with
the valid mask, as the sampler builds it; index 0 below). Each chunk's ground truth

    Q^π(s, a) ≈ 1/R Σ_r Σ_k γ^k r_k

comes from restoring s, executing the chunk and following π to the episode's end, R times,
in the MDP of `ope.py` (Eq. 14 rewards, the run's γ, the operator's takeover alarm a failure
with `watch`). The true state value is the mean true Q of the C policy chunks,

    V^π(s) ≈ 1/C Σ_c Q^π(s, a_c),  a_c ~ π(·|s),

i.e. Eq. 10 with ground truth in place of Q_pess. That is the V the critic's advantage is
meant to estimate (the backup of Eq. 7 executes whole chunks; a direct rollout of π would
execute only `exec_horizon` actions of its first chunk), and it costs no rollouts beyond
the chunks' own. The critic's side: Q_pess = min over the ensemble (Eq. 9) of the same
C + 1 chunks, Â = Q_pess(s, a_data) − mean_c Q_pess(s, a_c), and the actor's weights
exp(clip(A/β)) (Eq. 11) from the learner's own `actor_weights` (its V from M fresh samples,
its β, ε_clip and normalisation; the normalising std is over the N data chunks).

Scored per source and overall (`aloe.evaluation.action_scores.score_states`):
- within-state Spearman of Q_pess against the truth over the C + 1 chunks, averaged over
  states; a state whose truth is the same for every chunk has no ranking and is counted
  apart (`constant_truth`), as is one where the critic gives every chunk one value;
- sign accuracy: (Â > 0) == (true A > 0) over the states with a ranking; the learner's own
  (w > 1) == (true A > 0) as `weight_sign_accuracy`; `true_advantage_positive` is the base
  rate (how often the data chunk beats π): a constant guess reaches max(rate, 1 − rate);
- Pearson and Spearman of the weights, and Spearman of Â, against the true advantages,
  across every state (a constant-truth state has true A = 0);
- for a run that labels its data (RECAP), its indicator against the truth's
  (`aloe.evaluation.indicator`: `indicator_agreement`, `indicator_sign_agreement`).

A run needs one of the two to be scored (`applies`): a chunked Q critic (`value_kind` "q"),
or labels (its row's `labels_at`); RECAP with `advantage value` has only the labels, so
its entry holds the truth's and the indicator's scores alone.

Cost. Stepping the simulator dominates (π's batched chunk calls and the critic are a few
per cent on CPU), then building the simulators (~0.2–0.4 s each). The defaults, 24 states ×
(7 + 1) chunks × 2 rollouts = 384 rollouts in lockstep groups of 32 simulators (2 states),
took 97 s on a default-preset ALOE run (rollouts of 49 steps on average, ended by success,
the takeover alarm or the time limit) and 2 minutes on a smoke run, on 2 CPU cores shared
with a training run. The time grows with states × (chunks + 1) × rollouts.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aloe import data as D
from aloe.algos.aloe_math import q_pess
from aloe.algos.optimised import to_device
from aloe.algos.recap_math import Labels
from aloe.algos.table import ALGORITHMS, Algorithm
from aloe.data import ChunkBatch
from aloe.datasets.sampler import ChunkSampler
from aloe.envs.base import EpisodeEnv
from aloe.envs.registry import make_env
from aloe.errors import bad, require
from aloe.evaluation.action_scores import DATA, advantages, mean, score_states, true_advantages
from aloe.evaluation.indicator import agreement_scores, run_labels, true_indicator
from aloe.evaluation.ope import load_buffer, restored_returns, spearman, watcher_factory
from aloe.evaluation.qtrace import QFn, critic_q_fn
from aloe.evaluation.restore import Restorer
from aloe.evaluation.rollout import ActorBatchPolicy, BatchPolicy
from aloe.rollout import Watcher

ChunkFn = Callable[[np.ndarray, int], np.ndarray]  # states (B, S), n -> chunks (B, n, h, A)
WeightFn = Callable[[ChunkBatch], np.ndarray]  # the data chunks -> actor weights (B,)
ACTION_OPE_FILE = "action_ope.json"  # `aloe eval --suite action-ope`'s output in a run dir


@dataclass
class ActionOpeConfig:
    """Sample sizes of the action-level OPE (the module docstring gives their cost)."""

    states: int = 24
    """Buffer states N, an equal share per source present (policy, human, demo); a source
    with fewer restorable steps gives the rest of its share to the others. 0 skips it."""
    chunks: int = 7
    """Chunks C sampled from π at each state; with the data chunk, C + 1 are ranked."""
    rollouts: int = 2
    """Monte-Carlo rollouts R per chunk (only π's sampling noise differs between them)."""
    watch: bool = True
    """End rollouts at the operator's takeover alarm with a failure, as collection does."""
    exec_horizon: int | None = None
    """Actions executed per chunk of π when following it; None = the run's."""
    batch_envs: int = 32
    """Simulators stepped in lockstep (a state's (C + 1)·R rollouts always go together)."""
    seed: int = 0
    """Seed of the state draw, of the chunks sampled from π and of π's rollout noise."""

    @classmethod
    def from_args(cls, args: Any) -> ActionOpeConfig:
        """From the `--action-ope-states/-chunks/-rollouts` of `aloe eval` or `aloe compare`."""
        return cls(
            states=args.action_ope_states,
            chunks=args.action_ope_chunks,
            rollouts=args.action_ope_rollouts,
        )

    def check(self, flags: bool = False) -> None:
        """UsageError naming the first field out of range, as `action_ope.states`, or with
        `flags` as the commands' `--action-ope-states` (aloe eval, aloe compare)."""

        def name(f: str) -> str:
            return f"--action-ope-{f.replace('_', '-')}" if flags else f"action_ope.{f}"

        require(self.states >= 0, name("states"), self.states, "must be >= 0 (0 skips it)")
        require(self.chunks >= 1, name("chunks"), self.chunks, "must be >= 1")
        require(self.rollouts >= 1, name("rollouts"), self.rollouts, "must be >= 1")
        require(self.batch_envs >= 1, name("batch_envs"), self.batch_envs, "must be >= 1")


@dataclass
class Candidates:
    """The N sampled states and their C + 1 chunks each (the data chunk at index 0)."""

    rows: np.ndarray  # (N,) positions in the frames
    source: np.ndarray  # (N,) str
    states: np.ndarray  # (N, S)
    chunks: np.ndarray  # (N, C + 1, h, A), zero past valid
    valid: np.ndarray  # (N, C + 1, h)
    batch: ChunkBatch  # the data chunks as the sampler builds them (the weights' input)


def stratified_rows(source: np.ndarray, eligible: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n distinct rows of `eligible`, shared equally between the sources present (sorted)."""
    rng = np.random.default_rng(seed)
    pools = {s: rng.permutation(eligible[source[eligible] == s]) for s in D.SOURCES}
    pools = {s: p for s, p in pools.items() if len(p)}
    taken = dict.fromkeys(pools, 0)
    while sum(taken.values()) < n:  # round-robin: a source runs dry, the others go on
        open_ = [s for s in pools if taken[s] < len(pools[s])]
        if not open_:
            break
        for s in open_[: n - sum(taken.values())]:
            taken[s] += 1
    picked = [pools[s][: taken[s]] for s in pools]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def sample_candidates(
    frames: Mapping[str, np.ndarray],
    restorer: Restorer,
    chunk_fn: ChunkFn,
    cfg: ActionOpeConfig,
    horizon: int,
    gamma: float,
    rows: np.ndarray | None = None,
    time_limit: int | None = None,
) -> Candidates:
    """Draw the states (stratified by source; or take `rows`) and put C chunks of π beside
    each data chunk. `time_limit` (`TrainConfig.clock_limit`): the data chunks carry the
    episode clock, for a critic that reads it."""
    source = np.asarray(frames[D.SOURCE]).astype(str)
    ok = np.flatnonzero([restorer.restorable(r) for r in range(len(source))])
    if not ok.size:
        raise ValueError("no restorable step: the store's episodes carry no seed")
    if rows is None:
        rows = stratified_rows(source, ok, cfg.states, cfg.seed)
    elif not np.isin(rows, ok).all():
        raise ValueError("rows: every row must be a restorable buffer step")
    sampler = ChunkSampler(frames, horizon=horizon, gamma=gamma, time_limit=time_limit)
    batch = sampler.chunks_at(rows)
    states, data, valid = (t.numpy() for t in (batch.state, batch.actions, batch.valid))
    drawn = np.asarray(chunk_fn(states, cfg.chunks), dtype=np.float32)  # (N, C, h, A)
    chunks = np.concatenate([data[:, None], drawn], axis=1)
    valid_all = np.concatenate([valid[:, None], np.ones(drawn.shape[:3], np.float32)], axis=1)
    return Candidates(rows, source[rows], states, chunks, valid_all, batch)


def chunk_truth(
    make_env: Callable[[], EpisodeEnv],
    restorer: Restorer,
    cands: Candidates,
    policy: BatchPolicy,
    *,
    gamma: float,
    rollouts: int,
    make_watcher: Callable[[], Watcher] | None = None,
    reseed: Callable[[int], None] | None = None,
    batch_envs: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (N, C + 1, R) of each chunk executed from its restored state then π, and
    exact (N,): the restore reproduced the stored observations."""
    prefixes = [
        [
            chunk[: int(v.sum())]
            for chunk, v in zip(chunks, valid, strict=True)
            for _ in range(rollouts)
        ]
        for chunks, valid in zip(cands.chunks, cands.valid, strict=True)
    ]
    returns, exact = restored_returns(
        make_env,
        restorer,
        cands.rows,
        prefixes,
        policy,
        gamma=gamma,
        make_watcher=make_watcher,
        reseed=reseed,
        batch_envs=batch_envs,
    )
    return returns.reshape(*cands.chunks.shape[:2], rollouts), exact


def save_truth(path: str | Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Write a ground-truth file: numeric and string arrays in one .npz, `meta` as JSON inside
    it. Never pickled: an object array raises ValueError, and `load_truth` refuses one."""
    for name, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ValueError(f"{name}: object arrays are not saved (no pickle); use str or numbers")
    out = {k: np.asarray(v) for k, v in arrays.items()}
    out["meta"] = np.array(json.dumps(dict(meta)))
    savez: Any = np.savez_compressed  # its stub takes **out for its allow_pickle flag
    savez(path, **out)


def load_truth(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and the meta dict of a file written by `save_truth` (no unpickling)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    return arrays, meta


@dataclass
class ActionOpeResult:
    """Everything the action-level OPE measured; `as_dict` is what eval.json keeps."""

    config: ActionOpeConfig
    gamma: float
    exec_horizon: int
    cands: Candidates
    truth: np.ndarray  # (N, C + 1, R) returns
    exact: np.ndarray  # (N,) bool
    q_members: np.ndarray | None  # (K, N, C + 1); None: no chunked Q critic
    weights: np.ndarray | None  # (N,) the actor's weights of the data chunks
    wall_s: float = 0.0
    labels: Labels | None = None  # the run's own labels at the N rows (RECAP's I and A)

    @property
    def q_true(self) -> np.ndarray:
        return self.truth.mean(axis=-1)

    @property
    def q_pess(self) -> np.ndarray | None:
        return None if self.q_members is None else q_pess(self.q_members)  # Eq. 9

    def scores(self, mask: np.ndarray | None = None) -> dict[str, Any]:
        """The states' scores (`score_states`, and the labels' `agreement_scores`), of the
        rows in `mask` (all by default)."""
        m = np.ones(len(self.cands.rows), dtype=bool) if mask is None else mask
        w = None if self.weights is None else self.weights[m]
        q = self.q_pess
        out = score_states(None if q is None else q[m], self.q_true[m], w)
        if self.labels is not None:
            out |= agreement_scores(self.labels, self.q_true, mask)
        return out

    def as_dict(self) -> dict[str, Any]:
        n, c1, r = self.truth.shape
        se = self.truth.std(-1, ddof=1) / math.sqrt(r) if r > 1 else None
        source = self.cands.source
        positive_true = None if self.labels is None else self.true_positive()
        return {
            "applicable": True,
            "config": asdict(self.config),
            "gamma": self.gamma,
            "exec_horizon": self.exec_horizon,
            "counts": {"states": n, "chunks": n * c1, "rollouts": n * c1 * r},
            "wall_s": self.wall_s,
            "restore_exact": mean(self.exact),
            "q_true_se_mean": None if se is None or not se.size else float(se.mean()),
            **self.scores(),
            "by_source": {s: self.scores(source == s) for s in D.SOURCES if (source == s).any()},
            "samples": [self._sample(i, positive_true) for i in range(n)],
        }

    def _sample(self, i: int, positive_true: np.ndarray | None) -> dict[str, Any]:
        q_true = self.q_true[i]
        out: dict[str, Any] = {
            "row": int(self.cands.rows[i]),
            "source": str(self.cands.source[i]),
            "valid_steps": int(self.cands.valid[i, DATA].sum()),
            "q_true": q_true.tolist(),
            "v_true": float(q_true[1:].mean()),
            "advantage_true": float(advantages(q_true[None])[0]),
            "weight": None if self.weights is None else float(self.weights[i]),
            "exact": bool(self.exact[i]),
        }
        q = self.q_pess
        if q is not None:
            out["q_pess"] = q[i].tolist()
            out["advantage"] = float(advantages(q[i][None])[0])
            out["spearman"] = spearman(q[i], q_true)
        if self.labels is not None and positive_true is not None:
            out["indicator"] = bool(self.labels.positive[i])
            out["indicator_true"] = bool(positive_true[i])
            out["indicator_advantage"] = float(self.labels.advantage[i])
        return out

    def true_positive(self) -> np.ndarray:
        """The truth's indicator (N,) bool (`aloe.evaluation.indicator.true_indicator`)."""
        if self.labels is None:
            raise ValueError("the truth's indicator needs the run's labels (its percentile)")
        a_true, _ = true_advantages(self.q_true)
        return true_indicator(a_true, self.labels.labelled, self.labels.percentile)[0]


def run_action_ope(
    run: Any, cfg: ActionOpeConfig, rows: np.ndarray | None = None
) -> ActionOpeResult:
    """Action-level OPE of a loaded run (`aloe.load_run`) with a chunked Q critic (ALOE's,
    RECAP's with `advantage q`) or labels (RECAP's), at `cfg.states` buffer states drawn
    per source, or at the given buffer `rows`.

    A run with neither (BC, HG-DAgger, AWR's state value) raises a UsageError; the suite
    checks `applies` first and says so in its output instead.
    """
    cfg.check()
    if not applies(run.algorithm, run.config):
        raise bad("--run", run.root, not_applicable(run))
    start = time.perf_counter()
    rc = run.config
    frames, restorer = load_buffer(run)
    exec_h = cfg.exec_horizon or rc.exec_horizon
    policy = ActorBatchPolicy(run.actor, exec_h, run.device, seed=cfg.seed)
    cands = sample_candidates(
        frames,
        restorer,
        actor_chunk_fn(run, cfg.seed),
        cfg,
        rc.horizon,
        rc.optim.gamma,
        rows,
        rc.clock_limit(),
    )
    truth, exact = chunk_truth(
        lambda: make_env(rc.env),
        restorer,
        cands,
        policy,
        gamma=rc.optim.gamma,
        rollouts=cfg.rollouts,
        make_watcher=watcher_factory(run, cfg.watch),
        reseed=lambda k: policy.reseed(cfg.seed * 1_000_003 + k),
        batch_envs=cfg.batch_envs,
    )
    q = None
    if run.value_kind == "q":
        q = critic_members(critic_q_fn(run.critic, run.device), cands)
    weights = learner_weights(run, cands.batch, cfg.seed) if run.algorithm.weighted else None
    labels = run_labels(run, frames, cands.rows, cfg.seed)
    wall = time.perf_counter() - start
    return ActionOpeResult(
        cfg, rc.optim.gamma, exec_h, cands, truth, exact, q, weights, wall, labels
    )


def applies(row: Algorithm, cfg: Any) -> bool:
    """The action-level OPE has something of a run of `row` with config `cfg` to score: a
    chunked Q critic's ranking (`value_kind` "q"), or its labels (`labels_at`)."""
    return row.value_kind(cfg) == "q" or row.labels_at is not None


def not_applicable(run: Any) -> str:
    """Why a loaded run's action-level OPE does not apply."""
    cfg = run.config
    scored = ", ".join(a for a, row in ALGORITHMS.items() if applies(row, cfg))
    kind = {"state": "a state value V(s)", None: "no value function"}[run.value_kind]
    return (
        f"algo {cfg.algo!r} learns {kind}, not a chunked Q critic, and labels no data; "
        f"action-level OPE ranks a Q critic's chunks or scores a run's labels (algos with "
        f"either, with this run's settings: {scored})"
    )


def critic_members(q_fn: QFn, cands: Candidates) -> np.ndarray:
    """Every member's Q (K, N, C + 1) of every state's chunks (every chunk at a state read
    at that state's episode clock, when the data chunks carry one)."""
    n, c1 = cands.chunks.shape[:2]
    states = np.repeat(cands.states, c1, axis=0)
    chunks = cands.chunks.reshape(n * c1, *cands.chunks.shape[2:])
    valid = cands.valid.reshape(n * c1, -1)
    clock = cands.batch.time
    if clock is None:
        q = q_fn(states, chunks, valid)
    else:
        q = q_fn(states, chunks, valid, np.repeat(clock.cpu().numpy(), c1, axis=0))
    return np.asarray(q).reshape(len(q), n, c1)


def actor_chunk_fn(run: Any, seed: int) -> ChunkFn:
    """C chunks a ~ π(·|s) per state from the run's actor, from a generator seeded once."""
    gen = torch.Generator(device=run.device).manual_seed(int(seed) % 2**63)

    @torch.no_grad()
    def sample(states: np.ndarray, n: int) -> np.ndarray:
        s = torch.as_tensor(states, dtype=torch.float32, device=run.device)
        tasks = torch.zeros(len(s), dtype=torch.long, device=run.device)
        return run.actor.sample(s, tasks, n, gen).cpu().numpy()

    return sample


def learner_weights(run: Any, batch: ChunkBatch, seed: int) -> np.ndarray:
    """The actor's weights (Eq. 11) of the data chunks, by the update's own `actor_weights`
    (as `weights.py` computes them), its generator seeded for V's samples."""
    run.learner.generator.manual_seed(seed)
    w, _ = run.learner.actor_weights(to_device(batch, run.device))
    return w.cpu().numpy().astype(np.float64)


def plot_action_ope(result: ActionOpeResult, path: Any) -> Any:
    """Critic's Â, the actor's weight and the run's labels' A against the true advantage,
    one point per state; the lines cross at what separates the signs (the labels' panel:
    the thresholds ε_ℓ and ε_true, so that agreeing points lie in two quadrants)."""
    import matplotlib  # late: only plots need matplotlib, slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a_true = advantages(result.q_true)
    panels = []  # (label, y, the vertical line's x, the horizontal line's y)
    if result.q_pess is not None:
        a_hat = advantages(result.q_pess)
        panels.append(("Â = Q_pess(s, a_data) − mean Q_pess(s, a~π)", a_hat, 0.0, 0.0))
    if result.weights is not None:
        panels.append(("actor weight exp(clip(A/β)) (Eq. 11)", result.weights, 0.0, 1.0))
    if result.labels is not None:
        scores = agreement_scores(result.labels, result.q_true)
        eps, eps_true = scores["indicator_threshold"], scores["indicator_true_threshold"]
        panels.append(("the labels' A; I = 1[A > ε_ℓ]", result.labels.advantage, eps_true, eps))
    colours = {"policy": "#1f77b4", "human": "#ff7f0e", "demo": "#7f7f7f"}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    for ax, (label, y, x0, y0) in zip(axes[0], panels, strict=True):
        for s, colour in colours.items():
            m = result.cands.source == s
            if m.any():
                ax.scatter(a_true[m], y[m], s=20, c=colour, alpha=0.8, label=s)
        ax.axvline(x0, color="k", lw=0.6)
        ax.axhline(y0, color="k", lw=0.6)
        ax.set_xlabel(f"true advantage Q^π(s, a_data) − V^π(s) (R={result.truth.shape[2]})")
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("action-level OPE: the data chunk against π's chunks at its state", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
