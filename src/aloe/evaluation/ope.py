"""Off-policy evaluation accuracy: the critic against ground truth from the simulator.

For a sample of (s_t, a_{t:t+h}) pairs from a run's episode store — the chunk of executed
actions from step t, cut at the fragment's end with the valid mask, as the sampler builds
it — the simulator is restored exactly to s_t (`restore.py`), the chunk executed, and the
current policy followed to the episode's end, R times:

    Q^π(s_t, a_{t:t+h}) ≈ 1/R Σ_r Σ_k γ^k r_k        (Eq. 14 rewards, γ of the run)
    V^π(s_t)            ≈ 1/R Σ_r Σ_k γ^k r_k        (following π from s_t directly)

Rollouts end where an episode ends: success (0), failure (−C_fail: a detected failure, the
time limit, or — with `watch`, the default — the operator's takeover alarm, which collection
labels a failure (Section IV-A), so the ground truth is taken in the MDP the critic was
trained on). Only the policy's sampling noise differs between the R rollouts.

Estimators scored against it (Spearman ρ, bias = mean(estimate − truth), RMSE): Q_pess
(Eq. 9), each ensemble member, V^π (Eq. 10) against the V ground truth, any extra state
value (`value_fns`, e.g. an AWR run's V), and the behaviour return — the discounted return
the data itself recorded from t to the fragment's end, what Monte-Carlo regression on the
buffer learns. The paper's claim (Section IV-A) is that its critic tracks Q^π of the
*current* policy where on-policy estimates track the data mixture; the last row is that
data-mixture estimate, measured against the same truth.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from aloe import data as D
from aloe.algos.aloe_math import q_pess
from aloe.datasets.sampler import ChunkSampler
from aloe.datasets.store import EpisodeStore
from aloe.envs.base import EpisodeEnv
from aloe.envs.registry import make_env
from aloe.evaluation.qtrace import QFn
from aloe.evaluation.restore import COLUMNS, Restorer, make_restorer
from aloe.evaluation.rollout import ActorBatchPolicy, BatchPolicy, play
from aloe.operators.profiles import make_operator
from aloe.rollout import Watcher

ValueFn = Callable[[np.ndarray], np.ndarray]  # states (B, S) -> values (B,)


@dataclass
class OpeConfig:
    """Sample sizes and conventions of the ground truth."""

    pairs: int = 32
    """(state, chunk) pairs drawn uniformly from the buffer's steps."""
    rollouts: int = 4
    """Monte-Carlo rollouts R per pair, for Q^π and again for V^π."""
    watch: bool = True
    """End ground-truth rollouts at the operator's takeover alarm with a failure, as
    collection does; False = the operator-free evaluation MDP."""
    exec_horizon: int | None = None
    """Actions executed per policy chunk when following π; None = the run's. The critic's
    backup (Eq. 7) assumes whole h-step chunks: set it to h to test its own fixed point."""
    value_samples: int = 16
    """Chunks sampled from π per state to estimate V^π by Eq. 10."""
    batch_envs: int = 32
    """Simulators stepped in lockstep (policy chunks are sampled for all in one batch)."""
    seed: int = 0
    """Seed of the pair draw and of the policy's sampling noise."""


@dataclass
class Pairs:
    """The sampled pairs: rows of the frames and their data chunks (P pairs)."""

    rows: np.ndarray  # (P,) positions in the frames
    states: np.ndarray  # (P, S)
    chunks: np.ndarray  # (P, h, A), zero past valid
    valid: np.ndarray  # (P, h)
    behaviour_return: np.ndarray  # (P,) data's discounted return to the fragment's end
    source: np.ndarray  # (P,) str
    time: np.ndarray | None = None  # (P, 2) the episode clock, for a critic that reads it


@dataclass
class GroundTruth:
    q: np.ndarray  # (P, R) returns after executing the chunk, then π
    v: np.ndarray  # (P, R) returns following π from s
    exact: np.ndarray  # (P,) bool: the restore reproduced the stored observations


def sample_pairs(
    frames: Mapping[str, np.ndarray],
    restorer: Restorer,
    n: int,
    horizon: int,
    gamma: float,
    seed: int,
    time_limit: int | None = None,
) -> Pairs:
    """Draw n distinct restorable steps uniformly; their chunks follow the sampler's rule.
    `time_limit` (`TrainConfig.clock_limit`): the pairs carry the episode clock."""
    ok = np.flatnonzero([restorer.restorable(r) for r in range(len(frames[D.ACTION]))])
    if not ok.size:
        raise ValueError("no restorable step: the store's episodes carry no seed")
    rows = np.sort(np.random.default_rng(seed).choice(ok, size=min(n, ok.size), replace=False))
    sampler = ChunkSampler(frames, horizon=horizon, gamma=gamma, time_limit=time_limit)
    batch = sampler.chunks_at(rows)
    return Pairs(
        rows,
        batch.state.numpy(),
        batch.actions.numpy(),
        batch.valid.numpy(),
        batch.mc_return.numpy().astype(np.float64),
        np.asarray(frames[D.SOURCE])[rows].astype(str),
        None if batch.time is None else batch.time.numpy(),
    )


def ground_truth(
    make_env: Callable[[], EpisodeEnv],
    restorer: Restorer,
    pairs: Pairs,
    policy: BatchPolicy,
    *,
    gamma: float,
    rollouts: int,
    make_watcher: Callable[[], Watcher] | None = None,
    reseed: Callable[[int], None] | None = None,
    batch_envs: int = 32,
) -> GroundTruth:
    """Monte-Carlo Q^π(s, chunk) and V^π(s) for every pair (see module docstring).

    Each pair gets 2R simulators restored to its state: R execute the chunk first, R do
    not; groups of pairs are stepped together so that π samples chunks in one batch.
    """
    prefixes = []
    for chunk, valid in zip(pairs.chunks, pairs.valid, strict=True):
        n = int(valid.sum())
        prefixes.append([chunk[:n]] * rollouts + [chunk[:0]] * rollouts)
    returns, exact = restored_returns(
        make_env,
        restorer,
        pairs.rows,
        prefixes,
        policy,
        gamma=gamma,
        make_watcher=make_watcher,
        reseed=reseed,
        batch_envs=batch_envs,
    )
    returns = returns.reshape(len(pairs.rows), 2, rollouts)
    return GroundTruth(returns[:, 0], returns[:, 1], exact)


def restored_returns(
    make_env: Callable[[], EpisodeEnv],
    restorer: Restorer,
    rows: Sequence[int] | np.ndarray,
    prefixes: Sequence[Sequence[np.ndarray]],
    policy: BatchPolicy,
    *,
    gamma: float,
    make_watcher: Callable[[], Watcher] | None = None,
    reseed: Callable[[int], None] | None = None,
    batch_envs: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Discounted returns (P, J) of J rollouts from each of P stored rows, and exact (P,).

    Rollout j of row i restores the row (with the watcher's counters), executes
    `prefixes[i][j]` ((n, A), n may be 0), then follows π to the episode's end. Every row
    has the same J; groups of rows are stepped in lockstep, `reseed(first row of the group)`
    before each, so that π samples the chunks of a whole group in one batch.
    """
    num = len(rows)
    per_row = len(prefixes[0]) if num else 0
    returns = np.zeros((num, per_row))
    exact = np.zeros(num, dtype=bool)
    if not num or not per_row:
        return returns, exact
    group = max(1, batch_envs // per_row)
    envs = [make_env() for _ in range(min(group, num) * per_row)]
    for lo in range(0, num, group):
        idx = list(range(lo, min(lo + group, num)))
        starts = []
        flat = []
        watchers = []
        for j, i in enumerate(idx):
            mine = envs[j * per_row : (j + 1) * per_row]
            obs, exact[i], watcher = _restore_pair(restorer, mine, int(rows[i]), make_watcher)
            starts += obs
            flat += list(prefixes[i])
            watchers += [copy.deepcopy(watcher) for _ in range(per_row)]
        if reseed is not None:
            reseed(lo)
        trajs = play(envs[: len(starts)], starts, policy, prefixes=flat, watchers=watchers)
        g = [t.discounted_return(gamma) for t in trajs]  # Σ_k γ^k r_k, Eq. 14 rewards
        returns[idx] = np.reshape(g, (len(idx), per_row))
    return returns, exact


def _restore_pair(
    restorer: Restorer,
    envs: list[EpisodeEnv],
    row: int,
    make_watcher: Callable[[], Watcher] | None,
) -> tuple[list[np.ndarray], bool, Watcher | None]:
    """Restore `row` into every env: the first by replay (counters), the rest directly."""
    watcher = make_watcher() if make_watcher else None
    restored = restorer.restore(envs[0], row, watcher)
    obs = [restored.obs] + [restorer.copy_to(envs[0], env, row) for env in envs[1:]]
    return obs, restored.exact, watcher


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when a side is constant."""
    rx = _ranks(np.asarray(x))
    ry = _ranks(np.asarray(y))
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def accuracy(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How well `estimate` tracks `truth`: Spearman ρ, bias, RMSE, number of pairs."""
    e = np.asarray(estimate, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    err = e - t
    return {
        "spearman": spearman(e, t),
        "bias": float(err.mean()) if len(err) else math.nan,
        "rmse": float(np.sqrt((err**2).mean())) if len(err) else math.nan,
        "n": len(err),
    }


@dataclass
class OpeResult:
    """Everything `ope` measured; `as_dict` is what eval.json keeps."""

    config: OpeConfig
    gamma: float
    exec_horizon: int
    pairs: Pairs
    truth: GroundTruth
    q_members: np.ndarray | None  # (K, P); None for a run without a Q critic
    v_estimate: np.ndarray | None  # (P,) V^π by Eq. 10, None without one
    value_fns: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (P,)

    @property
    def q_pess(self) -> np.ndarray | None:
        return None if self.q_members is None else q_pess(self.q_members)  # Eq. 9

    def scores(self, mask: np.ndarray | None = None) -> dict[str, Any]:
        m = np.ones(len(self.pairs.rows), dtype=bool) if mask is None else mask
        q_true = self.truth.q.mean(1)[m]
        v_true = self.truth.v.mean(1)[m]
        out: dict[str, Any] = {"behaviour_return": accuracy(self.pairs.behaviour_return[m], q_true)}
        if self.q_members is not None:
            out["q_pess"] = accuracy(q_pess(self.q_members)[m], q_true)  # Eq. 9
            out["q_members"] = [accuracy(q[m], q_true) for q in self.q_members]
        if self.v_estimate is not None:
            out["v"] = accuracy(self.v_estimate[m], v_true)
        for name, values in self.value_fns.items():
            out[f"value:{name}"] = accuracy(values[m], v_true)
        return out

    def as_dict(self) -> dict[str, Any]:
        truth = self.truth
        q_pess = self.q_pess
        se = truth.q.std(1, ddof=1) / math.sqrt(truth.q.shape[1]) if truth.q.shape[1] > 1 else None
        by_source = {
            s: self.scores(self.pairs.source == s) for s in np.unique(self.pairs.source).tolist()
        }
        samples = [
            {
                "row": int(r),
                "source": str(s),
                "valid_steps": int(self.pairs.valid[i].sum()),
                "q_true": float(truth.q[i].mean()),
                "v_true": float(truth.v[i].mean()),
                "q_pess": None if q_pess is None else float(q_pess[i]),
                "behaviour_return": float(self.pairs.behaviour_return[i]),
                "v_estimate": None if self.v_estimate is None else float(self.v_estimate[i]),
                "exact": bool(truth.exact[i]),
            }
            for i, (r, s) in enumerate(zip(self.pairs.rows, self.pairs.source, strict=True))
        ]
        return {
            "config": asdict(self.config),
            "gamma": self.gamma,
            "exec_horizon": self.exec_horizon,
            "pairs": len(self.pairs.rows),
            "restore_exact": float(truth.exact.mean()) if len(truth.exact) else math.nan,
            "q_true_se_mean": None if se is None else float(se.mean()),
            **self.scores(),
            "by_source": by_source,
            "samples": samples,
        }


def run_ope(
    run: Any,
    cfg: OpeConfig,
    *,
    q_fn: QFn | None,
    value_fn: ValueFn | None,
    value_fns: Mapping[str, ValueFn] | None = None,
) -> OpeResult:
    """OPE accuracy of a loaded run (`aloe.run.Run`): its store, env, policy and critic."""
    rc = run.config
    frames, restorer = load_buffer(run)
    gamma = rc.optim.gamma
    pairs = sample_pairs(frames, restorer, cfg.pairs, rc.horizon, gamma, cfg.seed, rc.clock_limit())
    exec_h = cfg.exec_horizon or rc.exec_horizon
    policy = ActorBatchPolicy(run.actor, exec_h, run.device, seed=cfg.seed)
    truth = ground_truth(
        lambda: make_env(rc.env),
        restorer,
        pairs,
        policy,
        gamma=gamma,
        rollouts=cfg.rollouts,
        make_watcher=watcher_factory(run, cfg.watch),
        reseed=lambda k: policy.reseed(cfg.seed * 1_000_003 + k),
        batch_envs=cfg.batch_envs,
    )
    q = None if q_fn is None else q_fn(pairs.states, pairs.chunks, pairs.valid, pairs.time)
    v = value_fn(pairs.states) if value_fn is not None else None
    extra = {name: np.asarray(fn(pairs.states)) for name, fn in (value_fns or {}).items()}
    return OpeResult(cfg, gamma, exec_h, pairs, truth, q, v, extra)


def load_buffer(run: Any) -> tuple[dict[str, np.ndarray], Restorer]:
    """A run's stored frames (what the sampler and the restore read) and their restorer."""
    store = EpisodeStore.open(run.root / "dataset")
    frames = store.load_frames(list(dict.fromkeys([*D.FRAME_COLUMNS, *COLUMNS])))
    meta = store.episodes()
    seeds = dict(zip(meta["episode_index"].to_pylist(), meta["seed"].to_pylist(), strict=True))
    return frames, make_restorer(run.config.task, frames, seeds, run.config.env.max_steps)


def watcher_factory(run: Any, watch: bool) -> Callable[[], Watcher] | None:
    """The run's operator watch for ground-truth rollouts (None: the operator-free MDP)."""
    rc = run.config
    return (lambda: make_operator(rc.task, rc.operator)) if watch else None


def aloe_value_fn(run: Any, num_samples: int, seed: int = 0) -> ValueFn:
    """V^π of Eq. 10 from the run's critic and actor (`Run.value`), in batches."""

    def value(states: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            parts = [
                run.value(states[i : i + 256], num_samples=num_samples, seed=seed + i)
                for i in range(0, len(states), 256)
            ]
        return np.concatenate(parts)

    return value


def plot_ope(result: OpeResult, path: Any) -> Any:
    """Scatter of estimates against ground truth (the diagonal is a perfect critic)."""
    import matplotlib  # late: only plots need matplotlib, slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q_true = result.truth.q.mean(1)
    v_true = result.truth.v.mean(1)
    series = [("behaviour return vs Q^π", q_true, result.pairs.behaviour_return, "#7f7f7f", ".")]
    if result.q_pess is not None:
        series.append(("Q_pess(s, chunk) vs Q^π", q_true, result.q_pess, "#1f77b4", "o"))
    if result.v_estimate is not None:
        series.append(("V^π estimate vs V^π", v_true, result.v_estimate, "#ff7f0e", "^"))
    for name, values in result.value_fns.items():
        series.append((f"{name} vs V^π", v_true, values, "#2ca02c", "s"))
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    for label, x, y, colour, marker in series:
        rho = spearman(y, x)
        ax.scatter(x, y, s=18, c=colour, marker=marker, alpha=0.75, label=f"{label} (ρ={rho:.2f})")
    every = np.concatenate([np.r_[s[1], s[2]] for s in series])
    lo = float(np.nanmin(every))
    hi = float(np.nanmax(every))
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--")
    ax.set_xlabel(f"ground truth (Monte-Carlo, R={result.truth.q.shape[1]})")
    ax.set_ylabel("estimate")
    ax.set_title("critic vs ground truth", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
