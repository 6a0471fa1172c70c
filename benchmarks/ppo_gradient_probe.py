"""PPO+SBC gradient probe (issue 18): is one iteration's policy gradient signal or noise?

For iteration k of a finished ppo-sbc run: the learner of checkpoint k−1 (π_old and V as
iteration k's update found them), iteration k's decisions as that update reads them (GAE
advantages, normalised), and the gradient of PPO's surrogate at ratio 1 (the first update
step's; each half's advantages centred) on disjoint random halves of the decisions, `--splits` times. The cosine between
the two halves' gradients says how reproducible the direction is: near 1, every half of the
data points the same way; near 0, the direction is noise. The same with the advantages
shuffled across decisions (a gradient of pure noise by construction) is the reference, and
the cosine between the whole batch's PPO gradient and the self-BC term's says whether the
two losses pull together. One JSON line per iteration.

    python benchmarks/ppo_gradient_probe.py RUN --iterations 1 2 3 --splits 8
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from aloe import data as D
from aloe.algos.ppo_math import ppo_clip_loss, self_demo_rows
from aloe.algos.ppo_sbc import Decisions, rollout_decisions
from aloe.datasets.sampler import ChunkSampler
from aloe.datasets.store import EpisodeStore
from aloe.run import load_run


def gradient(learner, loss_fn) -> torch.Tensor:
    """The actor's flat gradient of `loss_fn()`."""
    params = [p for p in learner.actor.parameters() if p.requires_grad]
    learner.actor.zero_grad(set_to_none=True)
    loss_fn().backward()
    return torch.cat(
        [torch.zeros(p.numel()) if p.grad is None else p.grad.flatten() for p in params]
    )


def ppo_gradient(learner, d: Decisions, rows: torch.Tensor, advantage: torch.Tensor):
    """The surrogate's gradient on `rows`, their advantages centred on their own mean: a
    constant baseline leaves the expected gradient as it is, and without it the halves of a
    batch normalised as a whole share its mean with opposite signs, which makes their
    gradients' cosine negative through the mean score Σ ∇ log π alone."""
    part = Decisions._make(t[rows] for t in d)
    adv = advantage[rows] - advantage[rows].mean()
    learner.actor.train()

    def loss() -> torch.Tensor:
        logp = learner.log_prob(part.state, part.task_index, part.actions, part.valid)
        return ppo_clip_loss(logp, part.logp_old, adv, learner.ppo.clip)[0]

    return gradient(learner, loss)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def probe(root: str, k: int, splits: int, seed: int) -> dict:
    run = load_run(root, k - 1)
    cfg, learner = run.config, run.learner
    frames = run.obs.frames(EpisodeStore.open(run.root / "dataset"), D.FRAME_COLUMNS)
    d, rollouts = rollout_decisions(cfg, learner, frames, k)
    n, gen = d.state.shape[0], torch.Generator().manual_seed(seed)
    real, shuffled = [], []
    for _ in range(splits):
        order = torch.randperm(n, generator=gen)
        a, b = order[: n // 2], order[n // 2 : 2 * (n // 2)]
        real.append(
            cosine(
                ppo_gradient(learner, d, a, d.advantage), ppo_gradient(learner, d, b, d.advantage)
            )
        )
        noise = d.advantage[torch.randperm(n, generator=gen)]
        shuffled.append(
            cosine(ppo_gradient(learner, d, a, noise), ppo_gradient(learner, d, b, noise))
        )
    whole = ppo_gradient(learner, d, torch.arange(n), d.advantage)
    buffer = frames.select(
        self_demo_rows(frames, cfg.ppo.sbc_buffer_episodes, cfg.ppo.sbc_buffer_rule)
    )
    demos = ChunkSampler(buffer, horizon=cfg.horizon, gamma=cfg.optim.gamma, seed=seed)
    batch = demos.sample(min(512, buffer.rows))
    bc = gradient(
        learner,
        lambda: learner.actor.flow_loss_per_sample(
            batch.state, batch.task_index, batch.actions, batch.valid, learner.generator
        ).mean(),
    )
    won = rollouts[D.SUCCESS][rollouts.episode_ends()].astype(bool)
    return {
        "iteration": k,
        "decisions": n,
        "episodes": int(len(won)),
        "rollout_success_rate": float(won.mean()),
        "half_cosine_mean": float(np.mean(real)),
        "half_cosine_std": float(np.std(real)),
        "shuffled_half_cosine_mean": float(np.mean(shuffled)),
        "shuffled_half_cosine_std": float(np.std(shuffled)),
        "ppo_bc_cosine": cosine(whole, -bc),  # > 0: a PPO step also lowers the BC loss
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished ppo-sbc run directory")
    parser.add_argument(
        "--iterations",
        type=int,
        nargs="+",
        default=[1],
        help="PPO iterations k to probe (each needs checkpoint k-1)",
    )
    parser.add_argument("--splits", type=int, default=8, help="random half splits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    for k in args.iterations:
        print(json.dumps(probe(args.run, k, args.splits, args.seed)), flush=True)


if __name__ == "__main__":
    main()
