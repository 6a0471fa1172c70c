"""`aloe train`: Algorithm 1 end to end, resumable; `aloe eval`: evaluate a run.

    iteration 0   collect operator demonstrations → BC warm start (Eq. 16) → evaluate
    iteration k   collect with π_{k-1} and the operator → N_Q critic steps (Eq. 7–8)
                  → N_π actor steps (Eq. 9–11, 15) → evaluate → checkpoint → log

Critic and actor are fine-tuned continually across iterations (Appendix C-4) on the whole
growing store (D_i = D_{i-1} ∪ new data).

Resume. All randomness derives from (seed, iteration, episode): each episode's seed is a
function of its position in the run, the policy's sampling noise is reseeded per episode,
and the sampler and update generators are reseeded per iteration from the checkpointed
learner. A run killed at any moment restarts from its last complete checkpoint, keeps the
episodes already committed for the interrupted iteration (collection continues with the
next episode seed) and ends with the same metrics as an uninterrupted run on CPU.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import trange

from aloe import checkpoint
from aloe import data as D
from aloe.algos import ppo_sbc
from aloe.algos.aloe import AloeLearner
from aloe.algos.dagger import dagger_rows
from aloe.collect import CollectConfig, CollectStats, collect, evaluate
from aloe.config import TrainConfig
from aloe.datasets.sampler import ChunkSampler
from aloe.datasets.store import EpisodeStore
from aloe.envs.metaworld import CONTROL_HZ, TaskEnv
from aloe.observation import Observations
from aloe.operators.scripted import ScriptedOperator
from aloe.run import FlowChunkPolicy, build_learner, resolve_device

Frames = dict[str, np.ndarray]  # column -> per-frame values, as `Trainer.frames` returns

# what training reads of the store: everything but the simulator states (evaluation's)
FRAME_COLUMNS = [*D.STEP_COLUMNS, "episode_index", "frame_index", "index", "task_index"]
EVAL_SEED = 1_000_000  # evaluation seeds: EVAL_SEED + i, never used for collection


# metrics.jsonl name -> the learner's metric, averaged over the iteration's update steps
UPDATE_METRICS = {
    "critic_loss": "critic/loss",
    "q_mean": "critic/q_mean",
    "q_pess_mean": "actor/q_data_mean",
    "v_mean": "actor/v_mean",
    "advantage_mean": "actor/advantage_mean",
    "advantage_std": "actor/advantage_std",
    "weight_mean": "actor/weight_mean",
    "weight_max": "actor/weight_max",
    "weight_clipped_frac": "actor/clip_frac",
    "actor_flow_loss": "actor/flow_loss",
}


def episode_seed(seed: int, iteration: int, i: int) -> int:
    return seed * 1_000_003 + iteration * 10_000 + i


class Trainer:
    """Owns a run directory and carries Algorithm 1 through it."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.root = cfg.out
        self.env = TaskEnv(cfg.env)
        self.eval_env = TaskEnv(cfg.env)
        self.operator = ScriptedOperator(cfg.task, cfg.operator, seed=cfg.seed)
        self.obs = Observations(cfg, resolve_device(cfg.device))
        size = (cfg.env.image_size, cfg.env.image_size)
        self.store = EpisodeStore.open_or_create(
            self.root / "dataset", fps=CONTROL_HZ, state_dim=self.env.state_dim,
            action_dim=self.env.action_dim,
            sim_state_dim=self.env.sim_state_dim if cfg.collect.record_sim_state else None,
            cameras={c: size for c in cfg.env.cameras} or None,
            video_codec=cfg.vision.video_codec,
        )  # fmt: skip
        self.history: list[dict[str, Any]] = []
        self.learner: AloeLearner | None = None

    # --- Algorithm 1 -----------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        last = checkpoint.latest(self.root / "checkpoints")
        if last is None:
            self.warm_start()
        else:
            self.restore(last[1])
        self.writer = _tensorboard(self.root / "tb", purge_step=len(self.history))
        final = 0 if self.cfg.algo == "bc" else self.cfg.iterations
        for k in range(len(self.history), final + 1):
            self.iteration(k)
        return self.history

    def warm_start(self) -> None:
        """Algorithm 1, line 1: imitation on successful operator demonstrations."""
        cfg, start = self.cfg, time.time()
        demos = cfg.num_demos * len(self.obs.tasks)  # episode seeds take the tasks in turn
        quota = CollectConfig(success_quota=demos, max_episodes=3 * demos,
                              record_sim_state=cfg.collect.record_sim_state)  # fmt: skip
        stats = self._collect(0, quota, policy=None)
        frames = self.frames()
        demo = _successful(frames) & (frames[D.SOURCE] == "demo")
        if not demo.any():
            raise RuntimeError("no successful demonstration: lower operator.noise_std")
        states = frames[D.STATE][demo]
        self.learner = build_learner(cfg, states.mean(0), states.std(0), obs=self.obs,
                                     instruction_features=self._instruction_features())  # fmt: skip
        sampler = self._sampler({k: v[demo] for k, v in frames.items()}, 0)
        self.writer = _tensorboard(self.root / "tb", purge_step=0)
        bc = self.steps(cfg.bc_steps, self.learner.bc_step, sampler, "bc warm start")
        row = dict.fromkeys(UPDATE_METRICS, math.nan)  # no critic yet: null in metrics.jsonl
        row["bc_loss"] = _mean(bc[-100:], "bc/loss")
        self._finish(0, stats, row, start)

    def iteration(self, k: int) -> None:
        """Algorithm 1, lines 3–15, then evaluation and a checkpoint."""
        cfg, learner, start = self.cfg, self._learner(), time.time()
        stats = COLLECTORS.get(cfg.algo, collect_with_operator)(self, k)  # line 3
        frames = self.frames()  # read once; each update builds the sampler it needs
        learner.generator.manual_seed(episode_seed(cfg.seed, k, 0) ^ 0x5EED)
        row = UPDATES[cfg.algo](self, k, frames)
        self._finish(k, stats, row, start)

    def steps(self, n: int, step: Callable[[Any], dict[str, float]], sampler: ChunkSampler,
              desc: str) -> list[dict[str, float]]:  # fmt: skip
        """n update steps on fresh batches, with a progress bar."""
        bar = trange(n, desc=desc, disable=not self.cfg.progress, leave=False)
        return [step(sampler.sample(self.cfg.aloe.batch_size)) for _ in bar]

    # --- pieces ----------------------------------------------------------------------------

    def _learner(self) -> AloeLearner:
        assert self.learner is not None
        return self.learner

    def _policy(self, version: int, seed: int) -> FlowChunkPolicy:
        learner = self._learner()
        return FlowChunkPolicy(learner.actor, version=version, exec_horizon=self.cfg.exec_horizon,
                               seed=seed, device=learner.device, obs=self.obs)  # fmt: skip

    def _instruction_features(self) -> torch.Tensor | None:
        return self.obs.instruction_features(self.root / "dataset" / "cache")

    def _collect(self, k: int, rule: CollectConfig, policy: Any) -> CollectStats:
        """Collect for iteration k, counting what an interrupted attempt already stored."""
        stats = CollectStats.from_store(self.store, iteration=k)
        seeds: Iterator[int] = (
            episode_seed(self.cfg.seed, k, i) for i in itertools.count(stats.episodes)
        )
        _, stats = collect(self.env, self.operator, rule, policy=policy, seeds=seeds,
                           store=self.store, iteration=k, progress=self.cfg.progress,
                           stats=stats)  # fmt: skip
        return stats

    def frames(self) -> dict[str, np.ndarray]:
        """Everything training reads of the store (all episodes so far), with observation
        vectors (image features from the cache) and the run's task rows (aloe.observation)."""
        return self.obs.frames(self.store, FRAME_COLUMNS)

    def _feature_log(self) -> dict[str, float]:
        """This iteration's feature-cache figures (image runs only), then reset."""
        if not self.obs.cameras:
            return {}
        log = dict(self.obs.feature_log)
        self.obs.feature_log = dict.fromkeys(log, 0.0)
        return log

    def _sampler(self, frames: dict[str, np.ndarray], k: int) -> ChunkSampler:
        return ChunkSampler(frames, horizon=self.cfg.horizon, gamma=self.cfg.aloe.gamma,
                            seed=episode_seed(self.cfg.seed, k, 0),
                            device=self._learner().device)  # fmt: skip

    def _finish(self, k: int, stats: CollectStats, row: dict[str, Any], start: float) -> None:
        cfg = self.cfg
        seeds = [EVAL_SEED + i for i in range(cfg.eval_episodes)]
        result = evaluate(self.eval_env, self._policy(k, seed=EVAL_SEED), seeds, cfg.progress)
        prev = self.history[-1] if self.history else {}
        metrics = {
            "iteration": k,
            "success_rate": result.success_rate,
            "mean_steps_to_success": result.mean_steps_to_success,
            **_by_task(result),
            "episodes": stats.episodes,
            "env_steps": stats.env_steps,
            "human_steps": stats.human_steps,
            "policy_steps": stats.policy_steps,
            "takeovers": stats.takeovers,
            "collect_successes": stats.successes,
            "total_env_steps": prev.get("total_env_steps", 0) + stats.env_steps,
            "total_human_steps": prev.get("total_human_steps", 0) + stats.human_steps,
            **row,
            **self._feature_log(),
            "wall_s": time.time() - start,
        }
        self.history.append(metrics)
        state = {"learner": self._learner().state_dict(), "history": self.history}
        checkpoint.save(self.root / "checkpoints", k, state)
        _write_jsonl(self.root / "metrics.jsonl", self.history)
        flat = {**metrics, **{f"{key}/{t}": v for key in ("success_by_task",)
                              for t, v in metrics.get(key, {}).items()}}  # fmt: skip
        for key, value in flat.items():
            if isinstance(value, int | float) and key != "iteration" and math.isfinite(value):
                self.writer.add_scalar(f"aloe/{key}", value, k)
        self.writer.flush()
        if cfg.progress:
            brief = {
                k: metrics[k] for k in ("iteration", "success_rate", "takeovers", "human_steps")
            }
            print(json.dumps(brief), file=sys.stderr)

    def restore(self, path: Path) -> None:
        state = checkpoint.load(path)
        self.learner = build_learner(self.cfg, obs=self.obs)
        self.learner.load_state_dict(state["learner"])
        self.history = state["history"]
        _write_jsonl(self.root / "metrics.jsonl", self.history)


def aloe_update(trainer: Trainer, k: int, frames: Frames) -> dict[str, float]:
    """N_Q critic steps (Algorithm 1, lines 4–9), then N_π actor steps (lines 10–15)."""
    cfg = trainer.cfg.aloe
    return _critic_then_actor(trainer, k, frames, cfg.critic_steps, cfg.actor_steps)


def awr_update(trainer: Trainer, k: int, frames: Frames) -> dict[str, float]:
    """AWR (algos/awr.py): value steps on Monte-Carlo returns, then weighted actor steps."""
    cfg = trainer.cfg.awr
    return _critic_then_actor(trainer, k, frames, cfg.value_steps, cfg.actor_steps)


def _critic_then_actor(trainer: Trainer, k: int, frames: Frames, critic_steps: int,
                       actor_steps: int) -> dict[str, float]:  # fmt: skip
    learner, sampler = trainer._learner(), trainer._sampler(frames, k)
    crit = trainer.steps(critic_steps, learner.critic_step, sampler, f"critic[{k}]")
    act = trainer.steps(actor_steps, learner.actor_step, sampler, f"actor[{k}]")
    return {name: _mean(crit if key.startswith("critic/") else act, key)
            for name, key in UPDATE_METRICS.items()}  # fmt: skip


def dagger_update(trainer: Trainer, k: int, frames: Frames) -> dict[str, float]:
    """HG-DAgger (algos/dagger.py): BC (Eq. 16) on corrections and successful data."""
    keep = dagger_rows(frames)
    rows = {c: v[keep] for c, v in frames.items()}
    bc = trainer.steps(trainer.cfg.aloe.actor_steps, trainer._learner().bc_step,
                       trainer._sampler(rows, k), f"dagger[{k}]")  # fmt: skip
    row = dict.fromkeys(UPDATE_METRICS, math.nan)  # no value function
    return {**row, "bc_loss": _mean(bc, "bc/loss"), "dagger_rows": int(keep.sum())}


def collect_with_operator(trainer: Trainer, k: int) -> CollectStats:
    """Algorithm 1, line 3: π_{k−1} acts, the operator takes over and corrects."""
    policy = trainer._policy(k - 1, seed=trainer.cfg.seed)
    return trainer._collect(k, trainer.cfg.collect, policy=policy)


# algorithm name -> its per-iteration update (after collection, before evaluation), given
# the whole buffer's frames (`Trainer.frames`). BC has none: it is the warm start alone.
UPDATES: dict[str, Callable[[Trainer, int, Frames], dict[str, float]]] = {
    "aloe": aloe_update,
    "awr": awr_update,
    "dagger": dagger_update,
    "ppo-sbc": ppo_sbc.ppo_update,
}
# algorithm name -> its own collection for iteration k; the rest use `collect_with_operator`.
COLLECTORS: dict[str, Callable[[Trainer, int], CollectStats]] = {
    "ppo-sbc": ppo_sbc.collect_rollouts,
}


def _by_task(result: Any) -> dict[str, Any]:
    """A multi-task run's per-task success and steps to success (none for one task)."""
    if len(set(result.tasks)) < 2:
        return {}
    by = result.by_task()
    return {"success_by_task": {t: r["success_rate"] for t, r in by.items()},
            "steps_to_success_by_task": {t: json_safe(r)["mean_steps_to_success"]
                                         for t, r in by.items()}}  # fmt: skip


def _successful(frames: dict[str, np.ndarray]) -> np.ndarray:
    """Rows of episodes that ended in success."""
    ep = frames["episode_index"]
    last = np.r_[ep[1:] != ep[:-1], True]
    ok = set(ep[last & frames[D.SUCCESS]].tolist())
    return np.isin(ep, list(ok))


def json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """NaN (e.g. steps to success when nothing succeeded) is written as null: valid JSON."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _mean(rows: list[dict[str, float]], key: str) -> float:
    return float(np.mean([r[key] for r in rows])) if rows else float("nan")


def _tensorboard(path: Path, purge_step: int) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(path), purge_step=purge_step)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """metrics.jsonl is derived from the checkpoints' history, and replaced atomically."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(json_safe(row)) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare_run(cfg: TrainConfig, resume: bool) -> TrainConfig:
    """Validate, then create the run directory (or reload its config to resume)."""
    out = cfg.out
    if resume:
        if not (out / "config.json").is_file():
            raise ValueError(f"--resume {out}: not a run directory (no config.json)")
        return TrainConfig.from_json((out / "config.json").read_text())
    cfg.validate()
    cfg = cfg.resolved()
    if out.exists() and any(out.iterdir()):
        hint = " (use --resume to continue it)" if (out / "config.json").exists() else ""
        raise ValueError(f"--out {out}: directory exists and is not empty{hint}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json())
    return cfg


def train(cfg: TrainConfig, resume: bool = False) -> list[dict[str, Any]]:
    cfg = prepare_run(cfg, resume)
    torch.manual_seed(cfg.seed)
    return Trainer(cfg).run()


@dataclass
class EvalArgs:
    """Evaluate a run's latest checkpoint without the operator."""

    run: Path
    """Run directory written by `aloe train`."""
    episodes: int = 50
    """Evaluation episodes."""
    seed: int = EVAL_SEED
    """Seed of the first episode; episode i uses seed + i."""
    suite: Literal["basic", "full"] = "basic"
    """basic: success on the seeds; full: also throughput, unseen objects, perturbations,
    Q traces and OPE accuracy (aloe.evaluation), into eval.json and DIR/report.html."""
    ope_pairs: int = 32
    """Full suite: (state, chunk) pairs of the OPE ground truth (0 skips it)."""
    ope_rollouts: int = 4
    """Full suite: Monte-Carlo rollouts per pair."""


def cmd_eval(args: EvalArgs) -> int:
    from aloe.run import load_run

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    if args.suite == "full":
        from aloe.evaluation.suite import cmd_eval_full

        return cmd_eval_full(args)
    run = load_run(args.run)
    env = TaskEnv(run.config.env)
    seeds = [args.seed + i for i in range(args.episodes)]
    result = evaluate(env, run.chunk_policy(seed=args.seed), seeds, progress=True)
    out = json_safe({"iteration": run.iteration, **result.as_dict()})
    text = json.dumps(out, indent=1)
    print(text)
    (args.run / "eval.json").write_text(text)
    return 0
