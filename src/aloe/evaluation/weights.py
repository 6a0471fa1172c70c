"""Which data the actor imitates: the advantage weights of a run's buffer, by source.

ALOE (and AWR) train the actor on every stored chunk, weighted by exp(clip(A/β)) (Eq. 11).
Whether that favours the operator's corrections over the policy's own failing fragments is
what separates it from HG-DAgger, which drops the latter outright. `weights_by_source`
draws chunks from the run's store as training does and reports, per source (demo, policy,
human), its share of the rows, its share of the total weight, and the advantage's mean and
spread, computed by the run's own learner (`actor_weights`) at its latest checkpoint.
`weights_by_policy_outcome` splits the policy's chunks by how their fragment ended: the
chunks that reach a labelled failure are the ones HG-DAgger never imitates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aloe import data as D
from aloe.algos.table import ALGORITHMS
from aloe.datasets.sampler import ChunkSampler
from aloe.datasets.store import EpisodeStore

WEIGHTED_ALGOS = tuple(a for a, row in ALGORITHMS.items() if row.weighted)  # aloe, awr


def buffer_weights(run: Any, rows: int = 4000, seed: int = 0) -> dict[str, Any]:
    """The learner's weights w and clipped advantages A (as `actor_weights` gives them) of
    `rows` chunks drawn from the run's store, with their rows in `frames`."""
    if run.config.algo not in WEIGHTED_ALGOS:
        raise ValueError(
            f"algo {run.config.algo!r} does not weight its data; only {WEIGHTED_ALGOS} do"
        )
    frames = run.obs.frames(EpisodeStore.open(run.root / "dataset"), D.FRAME_COLUMNS)
    sampler = ChunkSampler(
        frames,
        horizon=run.config.horizon,
        gamma=run.config.optim.gamma,
        seed=seed,
        device=run.device,
        time_limit=run.config.clock_limit(),
    )
    picked = np.sort(
        np.random.default_rng(seed).choice(len(sampler), min(rows, len(sampler)), False)
    )
    batch = sampler.chunks_at(picked)
    run.learner.generator.manual_seed(seed)
    adv = []
    w = []
    for part in range(0, len(picked), 512):  # the learner's weights, batch by batch
        b = batch.rows(slice(part, part + 512))
        weights, _ = run.learner.actor_weights(b)
        a = torch.log(weights) * run.learner.beta  # A/β inside the clip: A where unclipped
        w.append(weights.cpu())
        adv.append(a.cpu())
    return {
        "frames": frames,
        "rows": picked,
        "weights": torch.cat(w).numpy(),
        "advantage": torch.cat(adv).numpy(),
        "source": batch.source.cpu().numpy(),
    }


def _summary(
    groups: dict[str, np.ndarray], weights: np.ndarray, advantage: np.ndarray
) -> dict[str, dict[str, float]]:
    out = {}
    for name, m in groups.items():
        if m.any():
            out[name] = {
                "rows": float(m.mean()),
                "weight_share": float(weights[m].sum() / weights.sum()),
                "weight_mean": float(weights[m].mean()),
                "clipped_advantage_mean": float(advantage[m].mean()),
                "clipped_advantage_std": float(advantage[m].std()),
            }
    return out


def weights_by_source(
    run: Any, rows: int = 4000, seed: int = 0, bw: dict[str, Any] | None = None
) -> dict[str, dict[str, float]]:
    """Per source: rows (fraction), weight_share, weight_mean, advantage_mean/std (of `bw`,
    `buffer_weights`' output, when given)."""
    bw = bw or buffer_weights(run, rows, seed)
    groups = {name: bw["source"] == i for i, name in enumerate(D.SOURCES)}
    return _summary(groups, bw["weights"], bw["advantage"])


def fragment_failure(frames: Any, rows: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(reaches, failed), bool per row of `rows`: its fragment ends in a labelled failure
    (its last step done and not a success), and that last step lies within the chunk of
    `horizon` steps starting at the row."""
    ep = np.asarray(frames[D.EPISODE])
    fr = np.asarray(frames[D.FRAGMENT])
    ends = np.flatnonzero(D.run_ends(ep, fr))
    end = ends[np.cumsum(D.run_starts(ep, fr)) - 1][rows]  # each row's fragment end
    failed = np.asarray(frames[D.DONE])[end] & ~np.asarray(frames[D.SUCCESS])[end]
    return failed & (end - rows < horizon), failed


POLICY_OUTCOMES = (
    "reaches its fragment's failure",
    "earlier in a failed fragment",
    "fragment without a failure",
)


def weights_by_policy_outcome(
    run: Any, rows: int = 4000, seed: int = 0, bw: dict[str, Any] | None = None
) -> dict[str, dict[str, float]]:
    """The policy's chunks (`weights_by_source`'s policy rows) by how their fragment ended:
    the chunk reaches a labelled failure (a takeover cut or a failure event) within its h
    steps; the fragment ends in one later; or it ends otherwise (success, time limit without
    a label, a handback). Shares are of the whole buffer's weight, as `weights_by_source`'s."""
    bw = bw or buffer_weights(run, rows, seed)
    reaches, failed = fragment_failure(bw["frames"], bw["rows"], run.config.horizon)
    policy = bw["source"] == D.SOURCES.index("policy")
    masks = (policy & reaches, policy & failed & ~reaches, policy & ~failed)
    return _summary(dict(zip(POLICY_OUTCOMES, masks, strict=True)), bw["weights"], bw["advantage"])
