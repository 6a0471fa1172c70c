"""Which data the actor imitates: the advantage weights of a run's buffer, by source.

ALOE (and AWR) train the actor on every stored chunk, weighted by exp(clip(A/β)) (Eq. 11).
Whether that favours the operator's corrections over the policy's own failing fragments is
what separates it from HG-DAgger, which drops the latter outright. `weights_by_source`
draws chunks from the run's store as training does and reports, per source (demo, policy,
human), its share of the rows, its share of the total weight, and the advantage's mean and
spread, computed by the run's own learner (`actor_weights`) at its latest checkpoint.
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


def weights_by_source(run: Any, rows: int = 4000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per source: rows (fraction), weight_share, weight_mean, advantage_mean/std."""
    if run.config.algo not in WEIGHTED_ALGOS:
        raise ValueError(f"algo {run.config.algo!r} does not weight its data; "
                         f"only {WEIGHTED_ALGOS} do")  # fmt: skip
    frames = run.obs.frames(EpisodeStore.open(run.root / "dataset"), D.FRAME_COLUMNS)
    sampler = ChunkSampler(frames, horizon=run.config.horizon, gamma=run.config.aloe.gamma,
                           seed=seed, device=run.device)  # fmt: skip
    picked = np.random.default_rng(seed).choice(len(sampler), min(rows, len(sampler)), False)
    batch = sampler.chunks_at(np.sort(picked))
    run.learner.generator.manual_seed(seed)
    adv, w = [], []
    for part in range(0, len(picked), 512):  # the learner's weights, batch by batch
        b = batch.rows(slice(part, part + 512))
        weights, _ = run.learner.actor_weights(b)
        a = torch.log(weights) * run.learner.beta  # A/β inside the clip: A where unclipped
        w.append(weights.cpu())
        adv.append(a.cpu())
    weights, advantage = torch.cat(w), torch.cat(adv)
    source = batch.source.cpu().numpy()
    out = {}
    for i, name in enumerate(D.SOURCES):
        m = torch.as_tensor(source == i)
        if m.any():
            out[name] = {
                "rows": float(m.float().mean()),
                "weight_share": float(weights[m].sum() / weights.sum()),
                "weight_mean": float(weights[m].mean()),
                "clipped_advantage_mean": float(advantage[m].mean()),
                "clipped_advantage_std": float(advantage[m].std(correction=0)),
            }
    return out
