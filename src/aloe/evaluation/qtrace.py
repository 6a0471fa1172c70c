"""Q traces: Q_pess of each executed chunk along an episode, as in the paper's Figs. 3 and 9.

At every step t the chunk is the h actions actually executed from t on, cut at the end of
t's fragment (the sampler's rule: a chunk never crosses a fragment) and masked with `valid`
beyond it. For a dataset episode these are the stored actions; for a fresh rollout the
actions the policy executed. The plot shades policy, human and demo fragments, marks
takeovers, failures and the success, and draws the ensemble's spread around Q_pess.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from aloe import data as D
from aloe.algos.aloe_math import q_pess
from aloe.algos.table import ALGORITHMS
from aloe.datasets.store import EpisodeStore, StoreError
from aloe.envs.metaworld import CONTROL_HZ, TaskEnv
from aloe.errors import bad, require
from aloe.evaluation.rollout import rollout
from aloe.nn import evaluating
from aloe.run import load_run, read_run_config, require_run_dir


class QFn(Protocol):
    """(states (B, S), chunks (B, h, A), valid (B, h), the episode clock (B, 2) for a critic
    that reads it) -> every member's Q (K, B)."""

    def __call__(
        self,
        states: np.ndarray,
        chunks: np.ndarray,
        valid: np.ndarray,
        time: np.ndarray | None = None,
    ) -> np.ndarray: ...


SOURCE_COLOURS = {"policy": "#dbe9f6", "human": "#fde3c8", "demo": "#e6e6e6"}


def critic_q_fn(critic: torch.nn.Module, device: torch.device, batch: int = 256) -> QFn:
    """The ensemble critic (Eq. 8's Q_φ_1..K) as a numpy function, in eval mode."""

    def tensor(x: np.ndarray | None, i: int) -> torch.Tensor | None:
        if x is None:
            return None
        return torch.as_tensor(np.asarray(x[i : i + batch]), dtype=torch.float32, device=device)

    @torch.no_grad()
    def q(
        states: np.ndarray,
        chunks: np.ndarray,
        valid: np.ndarray,
        time: np.ndarray | None = None,
    ) -> np.ndarray:
        out = []
        with evaluating(critic):
            for i in range(0, len(states), batch):
                s, a, v, t = (tensor(x, i) for x in (states, chunks, valid, time))
                tasks = torch.zeros(len(states[i : i + batch]), dtype=torch.long, device=device)
                out.append(critic(s, tasks, a, v, t).cpu().numpy())
        return np.concatenate(out, axis=1)

    return q


def chunk_windows(
    actions: np.ndarray, fragment: np.ndarray, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """The executed chunk from every step: (T, h, A) actions, zero-padded, and (T, h) valid."""
    t_len = len(actions)
    idx = np.arange(t_len)[:, None] + np.arange(horizon)[None]
    inside = idx < t_len
    idx = np.minimum(idx, t_len - 1)
    valid = inside & (fragment[idx] == fragment[:, None])
    chunks = np.where(valid[..., None], actions[idx], 0.0).astype(np.float32)
    return chunks, valid.astype(np.float32)


@dataclass
class EpisodeTrace:
    """What a Q trace needs of an episode, dataset or rollout alike (T steps)."""

    states: np.ndarray  # (T, S) s_t before each step
    actions: np.ndarray  # (T, A) executed
    source: np.ndarray  # (T,) "policy" | "human" | "demo"
    fragment: np.ndarray  # (T,) fragment index
    failure_reason: np.ndarray  # (T,) "" except where a fragment failed
    success: bool  # the episode ended in success
    title: str


def from_store(root: Path, episode: int) -> EpisodeTrace:
    """Episode `episode` of the episode store at `root`."""
    store = EpisodeStore.open(root)
    if not 0 <= episode < store.num_episodes:
        raise ValueError(f"--episode {episode}: the store has episodes 0..{store.num_episodes - 1}")
    cols = [D.STATE, D.ACTION, D.SOURCE, D.FRAGMENT, D.FAILURE_REASON, D.SUCCESS]
    frames = store.load_frames([*cols, "episode_index"])
    rows = frames["episode_index"] == episode
    f = {k: frames[k][rows] for k in cols}
    meta = store.episodes().slice(episode, 1).to_pylist()[0]
    title = f"episode {episode} (iteration {meta['iteration']}, seed {meta['seed']})"
    return EpisodeTrace(
        f[D.STATE],
        f[D.ACTION],
        f[D.SOURCE].astype(str),
        f[D.FRAGMENT],
        f[D.FAILURE_REASON].astype(str),
        bool(f[D.SUCCESS][-1]),
        title,
    )


def from_trajectory(traj: Any, title: str) -> EpisodeTrace:
    """A `rollout.Trajectory`: one policy fragment."""
    n = len(traj)
    reasons = np.array([""] * n, dtype=object)
    if traj.failure_reason:
        reasons[-1] = traj.failure_reason
    return EpisodeTrace(
        np.stack(traj.states[:n]),
        np.stack(traj.actions),
        np.array(["policy"] * n),
        np.zeros(n, dtype=np.int64),
        reasons.astype(str),
        traj.success,
        title,
    )


def q_trace(
    q_fn: QFn, trace: EpisodeTrace, horizon: int, time_limit: int | None = None
) -> np.ndarray:
    """Every member's Q (K, T) of the executed chunk from each step; `time_limit`
    (`TrainConfig.clock_limit`): the critic reads the episode clock too."""
    chunks, valid = chunk_windows(trace.actions, trace.fragment, horizon)
    if time_limit is None:
        return q_fn(trace.states, chunks, valid)
    columns = {D.EPISODE: np.zeros(len(trace.source)), D.FRAGMENT: trace.fragment}
    clock = D.episode_clock({**columns, D.SOURCE: trace.source}, time_limit)
    return q_fn(trace.states, chunks, valid, clock)


def plot_q_trace(trace: EpisodeTrace, q: np.ndarray, path: Path, control_hz: float) -> Path:
    """Draw Q_pess (Eq. 9) with the ensemble's range over the episode's fragments; save PNG."""
    import matplotlib  # late: only plots need matplotlib, slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(q.shape[1])
    pessimistic = q_pess(q)  # Eq. 9
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for start, end, source in _runs(trace.source, trace.fragment):
        ax.axvspan(start - 0.5, end - 0.5, color=SOURCE_COLOURS.get(source, "#eee"), lw=0)
    ax.fill_between(
        t,
        pessimistic,  # the ensemble's lowest member
        q.max(0),
        color="#1f77b4",
        alpha=0.2,
        lw=0,
        label=f"ensemble range (K={q.shape[0]})",
    )
    ax.plot(t, pessimistic, color="#1f77b4", lw=1.6, label="Q_pess of the executed chunk")
    _mark_events(ax, trace, pessimistic)
    handles, labels = ax.get_legend_handles_labels()
    patches = [plt.Rectangle((0, 0), 1, 1, color=SOURCE_COLOURS[s]) for s in SOURCE_COLOURS]
    present = [s for s in SOURCE_COLOURS if s in set(trace.source.tolist())]
    ax.legend(
        handles + [patches[list(SOURCE_COLOURS).index(s)] for s in present],
        labels + [f"{s} fragment" for s in present],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
    )
    ax.set_xlabel(f"step ({control_hz:g} Hz)")
    ax.set_ylabel("Q")
    ax.set_title(trace.title, fontsize=10)
    ax.set_xlim(-0.5, len(t) - 0.5)
    fig.tight_layout()
    path = png_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def png_path(path: Path) -> Path:
    """The file a PNG for `path` is written to: `path`, with `.png` added when it has no
    suffix (as matplotlib's `savefig` adds it), so that the path reported is the one written."""
    path = Path(path)
    return path if path.suffix else path.with_name(path.name + ".png")


def _runs(source: np.ndarray, fragment: np.ndarray) -> list[tuple[int, int, str]]:
    """(start, end, source) of each fragment, in order."""
    starts, ends = D.run_bounds(fragment, source)
    return [(int(a), int(b), str(source[a])) for a, b in zip(starts, ends, strict=True)]


def _mark_events(ax: Any, trace: EpisodeTrace, pessimistic: np.ndarray) -> None:
    runs = _runs(trace.source, trace.fragment)
    takeovers = [
        b[0] for a, b in zip(runs, runs[1:], strict=False) if (a[2], b[2]) == ("policy", "human")
    ]
    for i, start in enumerate(takeovers):
        ax.axvline(
            start - 0.5, color="#d62728", ls="--", lw=1, label="takeover" if i == 0 else None
        )
    fails = np.flatnonzero(trace.failure_reason != "")
    reasons = ", ".join(sorted({r[:40] for r in trace.failure_reason[fails]}))
    for i, k in enumerate(fails):
        label = f"failure: {reasons}" if i == 0 else None
        ax.plot(k, pessimistic[k], "x", color="#d62728", ms=9, mew=2, label=label)
    if trace.success:
        ax.plot(len(pessimistic) - 1, pessimistic[-1], "*", color="#2ca02c", ms=14, label="success")


# --- a run's episodes and rollouts: `aloe plot-q` -------------------------------------------


def default_episode(root: Path) -> int:
    """The latest dataset episode with a takeover, else the latest episode."""
    meta = EpisodeStore.open(root).episodes()
    if meta.num_rows == 0:
        raise ValueError(f"{root}: the store has no episodes")
    takeovers = np.flatnonzero(np.asarray(meta["takeovers"].to_pylist()) > 0)
    return int(takeovers[-1]) if takeovers.size else meta.num_rows - 1


def plot_run_episode(run: Any, episode: int, out: Path) -> Path:
    """Q trace of dataset episode `episode` of a loaded run (`aloe.run.Run`)."""
    trace = from_store(run.root / "dataset", episode)
    trace.title = f"{run.config.task}, {trace.title}, critic of iteration {run.iteration}"
    q = q_trace(
        critic_q_fn(run.critic, run.device), trace, run.config.horizon, run.config.clock_limit()
    )
    return plot_q_trace(trace, q, out, CONTROL_HZ)


def plot_run_rollout(run: Any, seed: int, out: Path) -> Path:
    """Q trace of a fresh operator-free rollout of the run's policy from reset `seed`."""
    traj = rollout(TaskEnv(run.config.env), run.chunk_policy(seed=seed), seed)
    title = (
        f"{run.config.task}, rollout seed {seed}, policy and critic of iteration {run.iteration}"
    )
    trace = from_trajectory(traj, title)
    q = q_trace(
        critic_q_fn(run.critic, run.device), trace, run.config.horizon, run.config.clock_limit()
    )
    return plot_q_trace(trace, q, out, CONTROL_HZ)


@dataclass
class PlotQArgs:
    """Plot Q_pess along a dataset episode or a fresh rollout of a run (Figs. 3 and 9)."""

    run: Path
    """Run directory written by `aloe train`."""
    episode: int | None = None
    """Dataset episode to plot; default: the latest one with a takeover, else the latest."""
    rollout: bool = False
    """Plot a fresh operator-free rollout of the run's policy instead of a dataset episode."""
    seed: int = 1_000_000
    """Reset seed of the rollout (evaluation seeds start at 1 000 000)."""
    out: Path | None = None
    """PNG to write; default: DIR/eval/qtrace-episode-I.png or DIR/eval/qtrace-rollout-S.png."""


def cmd_plot_q(args: PlotQArgs) -> int:
    _check_plot_args(args)
    run = load_run(args.run, what="--run")
    if args.rollout:
        out = args.out or args.run / "eval" / f"qtrace-rollout-{args.seed}.png"
        path = plot_run_rollout(run, args.seed, out)
    else:
        episode = default_episode(args.run / "dataset") if args.episode is None else args.episode
        out = args.out or args.run / "eval" / f"qtrace-episode-{episode}.png"
        path = plot_run_episode(run, episode, out)
    print(path)
    return 0


def _check_plot_args(args: PlotQArgs) -> None:
    """Every argument, the run and its dataset episode: a UsageError before any loading."""
    require(
        not (args.rollout and args.episode is not None),
        "--episode",
        args.episode,
        "give --episode or --rollout, not both",
    )
    require(args.seed >= 0, "--seed", args.seed, "must be >= 0")
    require(
        args.out is None or not (args.out.is_dir() or png_path(args.out).is_dir()),
        "--out",
        args.out,
        "is a directory; give a .png file",
    )
    require(
        args.out is None or args.out.suffix.lower() in ("", ".png"),
        "--out",
        args.out,
        "must be a .png file (a name without a suffix gets .png)",
    )
    require_run_dir(args.run, "--run")
    cfg = read_run_config(args.run)
    algo = cfg.algo
    require(
        ALGORITHMS[algo].value_kind(cfg) != "state",
        "--run",
        args.run,
        f"algo {algo!r} learns a state value V(s), not the chunked Q that plot-q plots",
    )
    if not args.rollout:
        n = _num_episodes(args.run / "dataset")
        require(n > 0, "--run", args.run, "its dataset has no episodes; use --rollout")
        require(
            args.episode is None or 0 <= args.episode < n,
            "--episode",
            args.episode,
            f"the run's dataset has episodes 0..{n - 1}",
        )


def _num_episodes(root: Path) -> int:
    try:
        return EpisodeStore.open(root).num_episodes
    except StoreError as e:
        raise bad("--run", root.parent, f"its dataset is unreadable ({e})") from None
