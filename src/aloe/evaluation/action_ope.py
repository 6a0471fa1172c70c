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

Scored per source and overall (`score_states`):
- within-state Spearman of Q_pess against the truth over the C + 1 chunks, averaged over
  states; a state whose truth is the same for every chunk has no ranking and is counted
  apart (`constant_truth`), as is one where the critic gives every chunk one value;
- sign accuracy: (Â > 0) == (true A > 0) over the states with a ranking; the learner's own
  (w > 1) == (true A > 0) as `weight_sign_accuracy`; `true_advantage_positive` is the base
  rate (how often the data chunk beats π): a constant guess reaches max(rate, 1 − rate);
- Pearson and Spearman of the weights, and Spearman of Â, against the true advantages,
  across every state (a constant-truth state has true A = 0).

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
from aloe.algos.table import ALGORITHMS
from aloe.data import ChunkBatch
from aloe.datasets.sampler import ChunkSampler
from aloe.envs.base import EpisodeEnv
from aloe.envs.registry import make_env
from aloe.errors import bad, require
from aloe.evaluation.ope import load_buffer, restored_returns, spearman, watcher_factory
from aloe.evaluation.qtrace import QFn, critic_q_fn
from aloe.evaluation.restore import Restorer
from aloe.evaluation.rollout import ActorBatchPolicy, BatchPolicy
from aloe.rollout import Watcher

ChunkFn = Callable[[np.ndarray, int], np.ndarray]  # states (B, S), n -> chunks (B, n, h, A)
WeightFn = Callable[[ChunkBatch], np.ndarray]  # the data chunks -> actor weights (B,)
DATA = 0  # index of the data chunk among a state's C + 1 chunks
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


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's correlation; NaN when a side is constant or there are fewer than 2 points."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def constant_rows(q: np.ndarray) -> np.ndarray:
    """(N,) bool: every chunk of the state has the same value (to float round-off)."""
    q = np.asarray(q, dtype=np.float64)
    if not q.size:
        return np.zeros(len(q), dtype=bool)
    return np.ptp(q, axis=1) <= 1e-9 * np.maximum(1.0, np.abs(q).max(axis=1))


def score_states(
    q_pess: np.ndarray, q_true: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, Any]:
    """The module docstring's scores for states (N,) with C + 1 chunks each (data at 0)."""
    q_pess, q_true = np.asarray(q_pess, np.float64), np.asarray(q_true, np.float64)
    a_hat = q_pess[:, DATA] - q_pess[:, 1:].mean(1)
    a_true = q_true[:, DATA] - q_true[:, 1:].mean(1)
    flat = constant_rows(q_true)
    a_true = np.where(flat, 0.0, a_true)
    rho = np.array(
        [math.nan if f else spearman(e, t) for e, t, f in zip(q_pess, q_true, flat, strict=True)]
    )
    ranked = ~np.isnan(rho)
    varied = ~flat
    out: dict[str, Any] = {
        "states": len(q_true),
        "constant_truth": int(flat.sum()),
        "constant_estimate": int((varied & ~ranked).sum()),
        "within_state_spearman": _mean(rho[ranked]),
        "within_state_spearman_n": int(ranked.sum()),
        "sign_accuracy": _mean((a_hat[varied] > 0) == (a_true[varied] > 0)),
        "sign_n": int(varied.sum()),
        "true_advantage_positive": _mean(a_true[varied] > 0),
        "advantage_spearman": spearman(a_hat, a_true),
    }
    if weights is not None:
        w = np.asarray(weights, np.float64)
        out["weight_sign_accuracy"] = _mean((w[varied] > 1) == (a_true[varied] > 0))
        out["weights_pearson"] = pearson(w, a_true)
        out["weights_spearman"] = spearman(w, a_true)
    return out


def best_of_n_regret(q_pess: np.ndarray, q_true: np.ndarray) -> np.ndarray:
    """(N,) regret of picking by the critic among each state's N chunks of π (index 1 on; the
    data chunk at 0 is left out): mean_c Q^π(s, a_c) − Q^π(s, a_j*), j* = argmax_c Q_pess.

    Negative is good: the critic's pick beats a chunk of π drawn at random by that much
    (true return). 0: no better than chance; the oracle's floor is mean − max."""
    q_pess = np.asarray(q_pess, np.float64)[:, 1:]
    q_true = np.asarray(q_true, np.float64)[:, 1:]
    picked = q_true[np.arange(len(q_true)), q_pess.argmax(axis=1)]
    return np.asarray(q_true.mean(axis=1) - picked)


def split_half_spearman(truth: np.ndarray) -> np.ndarray:
    """(N,) within-state Spearman between the truth's two halves (N, C + 1, R): the mean
    of the even rollouts against the mean of the odd ones, over a state's C + 1 chunks. The
    truth's split-half reliability, the ceiling of a critic's within-state Spearman. NaN
    where a half gives every chunk one value (no ranking); needs R >= 2."""
    truth = np.asarray(truth, np.float64)
    if truth.shape[-1] < 2:
        raise ValueError(f"split-half reliability needs >= 2 rollouts, got {truth.shape[-1]}")
    even = truth[..., ::2].mean(axis=-1)
    odd = truth[..., 1::2].mean(axis=-1)
    return np.array([spearman(x, y) for x, y in zip(even, odd, strict=True)])


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


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else math.nan


@dataclass
class ActionOpeResult:
    """Everything the action-level OPE measured; `as_dict` is what eval.json keeps."""

    config: ActionOpeConfig
    gamma: float
    exec_horizon: int
    cands: Candidates
    truth: np.ndarray  # (N, C + 1, R) returns
    exact: np.ndarray  # (N,) bool
    q_members: np.ndarray  # (K, N, C + 1)
    weights: np.ndarray | None  # (N,) the actor's weights of the data chunks
    wall_s: float = 0.0

    @property
    def q_true(self) -> np.ndarray:
        return self.truth.mean(axis=-1)

    @property
    def q_pess(self) -> np.ndarray:
        return q_pess(self.q_members)  # Eq. 9

    def scores(self, mask: np.ndarray | None = None) -> dict[str, Any]:
        m = np.ones(len(self.cands.rows), dtype=bool) if mask is None else mask
        w = None if self.weights is None else self.weights[m]
        return score_states(self.q_pess[m], self.q_true[m], w)

    def as_dict(self) -> dict[str, Any]:
        n, c1, r = self.truth.shape
        se = self.truth.std(-1, ddof=1) / math.sqrt(r) if r > 1 else None
        source = self.cands.source
        return {
            "applicable": True,
            "config": asdict(self.config),
            "gamma": self.gamma,
            "exec_horizon": self.exec_horizon,
            "counts": {"states": n, "chunks": n * c1, "rollouts": n * c1 * r},
            "wall_s": self.wall_s,
            "restore_exact": _mean(self.exact),
            "q_true_se_mean": None if se is None or not se.size else float(se.mean()),
            **self.scores(),
            "by_source": {s: self.scores(source == s) for s in D.SOURCES if (source == s).any()},
            "samples": [self._sample(i) for i in range(n)],
        }

    def _sample(self, i: int) -> dict[str, Any]:
        q_true = self.q_true[i]
        q_pess = self.q_pess[i]
        return {
            "row": int(self.cands.rows[i]),
            "source": str(self.cands.source[i]),
            "valid_steps": int(self.cands.valid[i, DATA].sum()),
            "q_true": q_true.tolist(),
            "q_pess": q_pess.tolist(),
            "v_true": float(q_true[1:].mean()),
            "advantage_true": float(q_true[DATA] - q_true[1:].mean()),
            "advantage": float(q_pess[DATA] - q_pess[1:].mean()),
            "weight": None if self.weights is None else float(self.weights[i]),
            "spearman": spearman(q_pess, q_true),
            "exact": bool(self.exact[i]),
        }


def run_action_ope(
    run: Any, cfg: ActionOpeConfig, rows: np.ndarray | None = None
) -> ActionOpeResult:
    """Action-level OPE of a loaded run (`aloe.load_run`) with a chunked Q critic (ALOE), at
    `cfg.states` buffer states drawn per source, or at the given buffer `rows`.

    A run without one (BC, HG-DAgger, AWR's state value) raises a UsageError; the suite
    checks `has_q_critic` first and says so in its output instead.
    """
    cfg.check()
    if not has_q_critic(run):
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
    q = critic_members(critic_q_fn(run.critic, run.device), cands)
    weights = learner_weights(run, cands.batch, cfg.seed) if run.algorithm.weighted else None
    wall = time.perf_counter() - start
    return ActionOpeResult(cfg, rc.optim.gamma, exec_h, cands, truth, exact, q, weights, wall)


def has_q_critic(run: Any) -> bool:
    return bool(run.algorithm.value == "q")


def not_applicable(run: Any) -> str:
    with_q = ", ".join(a for a, row in ALGORITHMS.items() if row.value == "q")
    kind = {"state": "a state value V(s)", None: "no value function"}[run.algorithm.value]
    return (
        f"algo {run.config.algo!r} learns {kind}, not a chunked Q critic; action-level "
        f"OPE ranks a Q critic's chunks (algos with one: {with_q})"
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
    """Critic's Â and the actor's weight against the true advantage, one point per state."""
    import matplotlib  # late: only plots need matplotlib, slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q_true = result.q_true
    q_pess = result.q_pess
    a_true = q_true[:, DATA] - q_true[:, 1:].mean(1)
    a_hat = q_pess[:, DATA] - q_pess[:, 1:].mean(1)
    panels = [("Â = Q_pess(s, a_data) − mean Q_pess(s, a~π)", a_hat)]
    if result.weights is not None:
        panels.append(("actor weight exp(clip(A/β)) (Eq. 11)", result.weights))
    colours = {"policy": "#1f77b4", "human": "#ff7f0e", "demo": "#7f7f7f"}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    for ax, (label, y) in zip(axes[0], panels, strict=True):
        for s, colour in colours.items():
            m = result.cands.source == s
            if m.any():
                ax.scatter(a_true[m], y[m], s=20, c=colour, alpha=0.8, label=s)
        ax.axvline(0, color="k", lw=0.6)
        ax.axhline(1.0 if y is result.weights else 0.0, color="k", lw=0.6)
        ax.set_xlabel(f"true advantage Q^π(s, a_data) − V^π(s) (R={result.truth.shape[2]})")
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("action-level OPE: the data chunk against π's chunks at its state", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
