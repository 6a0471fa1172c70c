"""Critic probe (issue 13): how well do critic variants rank chunks at one state?

A finished ALOE run's buffer and actor stay fixed. `truth` draws N buffer states with C chunks
of π beside the data chunk and gets each chunk's true Q^π from restored rollouts
(aloe.evaluation.action_ope), once, into a file. `fit` trains a fresh critic of one variant
from scratch on the same buffer (TD targets with a' from the fixed actor) and scores it
against that truth after 250, 500, 1000, 2000, ... steps: the within-state Spearman of Q_pess
and the sign accuracy of A, per source, one JSON line per checkpoint.

    python benchmarks/critic_probe.py truth RUN truth.pkl --states 45
    python benchmarks/critic_probe.py fit RUN truth.pkl --name base --steps 2000
    python benchmarks/critic_probe.py fit RUN truth.pkl --name lr --steps 1000 optim.critic_lr=1e-3
    python benchmarks/critic_probe.py fit RUN truth.pkl --name x50 --steps 2000 --scale 50

Overrides are `section.field=value` of the run's config (critic.*, optim.*, aloe.*). `--scale s`
multiplies the critic heads' output by s, so the network predicts Q/s.
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aloe import data as D
from aloe.datasets.sampler import ChunkSampler
from aloe.evaluation.action_ope import (
    ActionOpeConfig,
    critic_members,
    run_action_ope,
    score_states,
)
from aloe.evaluation.ope import load_buffer
from aloe.evaluation.qtrace import critic_q_fn
from aloe.run import build_learner, load_run

CHECKPOINTS = (250, 500, 1000, 2000, 4000, 8000)


class Scaled(torch.nn.Module):
    """A critic head whose output is multiplied by `scale`."""

    def __init__(self, head: torch.nn.Module, scale: float) -> None:
        super().__init__()
        self.head, self.scale = head, scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z) * self.scale


def truth(args: argparse.Namespace) -> None:
    run = load_run(args.run)
    res = run_action_ope(run, ActionOpeConfig(states=args.states, chunks=7, rollouts=2))
    with open(args.truth, "wb") as f:  # a local cache of this script's own output
        pickle.dump({"cands": res.cands, "truth": res.truth}, f)
    d = res.as_dict()
    print(json.dumps({k: v for k, v in d.items() if k not in ("samples", "config")}, default=str))


def overridden(cfg: Any, overrides: list[str]) -> Any:
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        obj = getattr(cfg, section)
        old = getattr(obj, name)
        setattr(obj, name, value if isinstance(old, str) else type(old)(value))
    return cfg


def fit(args: argparse.Namespace) -> None:
    run = load_run(args.run)
    with open(args.truth, "rb") as f:
        cache = pickle.load(f)  # noqa: S301 (written by `truth` above)
    cands, q_true = cache["cands"], cache["truth"].mean(-1)
    cfg = overridden(run.config, args.overrides)
    norm = run.critic.state_norm
    learner: Any = build_learner(cfg, norm.mean.numpy(), norm.std.numpy(), obs=run.obs)
    learner.actor = run.actor  # the fixed, trained policy: a' ~ π of the finished run
    if args.scale != 1.0:
        for critic in (learner.critic, learner.target_critic):
            critic.heads = Scaled(critic.heads, args.scale)
        learner.critic_opt = type(learner.critic_opt)(
            learner.critic, cfg.optim.critic_lr, cfg.optim
        )
    frames, _ = load_buffer(run)
    sampler = ChunkSampler(frames, horizon=cfg.horizon, gamma=cfg.optim.gamma, seed=0)
    batch = cfg.optim.batch_size
    start, done, metrics = time.perf_counter(), 0, {}
    for target in sorted({s for s in CHECKPOINTS if s <= args.steps} | {args.steps}):
        while done < target:
            metrics = learner.critic_step(sampler.sample(batch))
            done += 1
        q_pess = critic_members(critic_q_fn(learner.critic, learner.device), cands).min(0)
        row: dict[str, Any] = {
            "variant": args.name,
            "steps": done,
            "wall_s": round(time.perf_counter() - start, 1),
            "loss": round(metrics["critic/loss"], 3),
        }
        for source in ("all", *D.SOURCES):
            mask = np.ones(len(cands.source), bool) if source == "all" else cands.source == source
            if mask.any():
                sc = score_states(q_pess[mask], q_true[mask])
                row[source] = {
                    "rho": round(sc["within_state_spearman"], 3),
                    "sign": round(sc["sign_accuracy"], 3),
                }
        print(json.dumps(row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("truth", "fit"))
    p.add_argument("run", type=Path, help="a finished ALOE run directory")
    p.add_argument("truth", type=Path, help="the truth file (written by `truth`, read by `fit`)")
    p.add_argument("overrides", nargs="*", help="section.field=value of the run's config")
    p.add_argument("--states", type=int, default=45)
    p.add_argument("--name", default="variant")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    truth(args) if args.mode == "truth" else fit(args)


if __name__ == "__main__":
    main()
