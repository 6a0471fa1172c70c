"""`aloe train`: Algorithm 1 end to end, resumable (`aloe eval` is aloe.run_eval).

    iteration 0   collect operator demonstrations → BC warm start (Eq. 16) → evaluate
    iteration k   collect with π_{k-1} and the operator → N_Q critic steps (Eq. 7–8)
                  → N_π actor steps (Eq. 9–11, 15) → evaluate → checkpoint → log

Critic and actor are fine-tuned continually across iterations (Appendix C-4) on the whole
growing store (D_i = D_{i-1} ∪ new data).

A robot run (`--task robot`, no simulator: `aloe.run_robot`) collects and evaluates
nothing in-process: each call trains one iteration, iteration 0 (the warm start on its
`--demos` dataset) on a fresh run, the next one on `--resume`, from the episodes the robot
sent through `aloe serve` for it, and stops at its checkpoint.

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
from pathlib import Path
from typing import Any

import torch

from aloe import checkpoint
from aloe import data as D
from aloe.algos.aloe import UPDATE_COLUMNS
from aloe.algos.best_of_n import BestOfNPolicy, acting_policy, check_run
from aloe.algos.context import CollectContext, Learner, UpdateContext, mean_metric
from aloe.algos.table import ALGORITHMS
from aloe.collect import CollectConfig, CollectStats, collect, evaluate
from aloe.config import TrainConfig
from aloe.config_machine import check_machine
from aloe.data import FRAME_COLUMNS, Frames, episode_seed
from aloe.datasets.sampler import ChunkSampler
from aloe.datasets.store import EpisodeStore
from aloe.envs.registry import largest_failure_cost, make_env, simulated
from aloe.errors import UsageError
from aloe.evaluation.run_report import write_report
from aloe.nn import resolve_device
from aloe.operators.profiles import make_operator
from aloe.progress import say
from aloe.run import FlowChunkPolicy, build_learner, observations
from aloe.run_demos import plan_demos
from aloe.run_dir import check_run_data, check_run_dir, run_lock, start_run_dir
from aloe.run_robot import check_robot_episodes, robot_success, with_robot
from aloe.run_summary import banner, iteration_line, time_left

EVAL_SEED = 1_000_000  # evaluation seeds: EVAL_SEED + i, never used for collection


class Trainer:
    """Owns a run directory and carries Algorithm 1 through it."""

    def __init__(self, cfg: TrainConfig) -> None:
        """Environments, operator and encoders: what can still fail is built before `run`
        touches the run directory, `cfg.out` (wherever it is: nothing in it names it)."""
        self.cfg = cfg
        self.root = cfg.out
        self.simulated = simulated(cfg.task)  # False: a robot run (module docstring)
        self.env = make_env(cfg.env)
        self.eval_env = make_env(cfg.env)
        self.operator = (
            make_operator(cfg.task, cfg.operator, seed=cfg.seed) if self.simulated else None
        )
        self.obs = observations(cfg, resolve_device(cfg.device))
        self.algorithm = ALGORITHMS[cfg.algo]  # its learner, update and collection
        self.store: EpisodeStore  # opened by `run`
        self.history: list[dict[str, Any]] = []
        self.learner: Learner | None = None
        self.workers: Any = None  # a Ray WorkerPool with --workers (aloe.distributed.workers)
        self.on_iteration: Callable[[dict[str, Any]], None] | None = None  # see `train`

    def _open_store(self) -> EpisodeStore:
        cfg = self.cfg
        size = (self.cfg.env.image_size, self.cfg.env.image_size)
        return EpisodeStore.open_or_create(
            self.root / "dataset",
            fps=1.0 / self.env.control_period,
            state_dim=self.env.state_dim,
            action_dim=self.env.action_dim,
            sim_state_dim=self.env.sim_state_dim if cfg.collect.record_sim_state else None,
            cameras={c: size for c in cfg.env.cameras} or None,
            video_codec=cfg.vision.video_codec,
        )

    # --- Algorithm 1 -----------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        self.store = self._open_store()
        # the newest readable checkpoint; damaged newer ones are renamed aside, since their
        # iterations run again and save their checkpoints anew
        last = checkpoint.load_latest(self.root / "checkpoints", set_aside=True)
        if last is None:
            self.warm_start()
        else:
            self.restore(last.state)
        self.writer = self._tensorboard(len(self.history))
        todo = range(len(self.history), self.final_iteration + 1)
        if not self.simulated:  # one iteration a call: the one the robot's episodes are of
            todo = todo[: 0 if last is None else 1]
        for k in todo:
            self.iteration(k)
        return self.history

    @property
    def final_iteration(self) -> int:
        """The run's last iteration: T, or 0 for BC (the warm start alone)."""
        return self.cfg.iterations if self.algorithm.iterates else 0

    def warm_start(self) -> None:
        """Algorithm 1, line 1: imitation on successful operator demonstrations."""
        cfg = self.cfg
        start = time.time()
        if cfg.demos is not None:
            stats = self.import_demos()
        else:
            demos = cfg.num_demos * len(self.obs.tasks)  # episode seeds take the tasks in turn
            quota = CollectConfig(
                success_quota=demos,
                max_episodes=3 * demos,
                record_sim_state=cfg.collect.record_sim_state,
            )
            stats = self._collect(0, quota, policy=None)
        frames = self.frames()
        demo = frames.successful_episodes() & (frames[D.SOURCE] == "demo")
        if not demo.any():
            raise RuntimeError(
                f"no successful demonstration in {stats.episodes} episodes of the "
                f"{cfg.operator.profile} operator within env.max_steps {cfg.env.max_steps}: "
                "raise env.max_steps (or lower operator.noise_std for the oracle)"
            )
        states = frames[D.STATE][demo]
        self.learner = self._build_learner(
            cfg,
            states.mean(0),
            states.std(0),
            obs=self.obs,
            instruction_features=self._instruction_features(),
            c_fail=largest_failure_cost(cfg.env, self.obs.tasks),
        )
        ctx = self._update_context(0, frames)
        self.writer = self._tensorboard(0)
        sampler = ctx.sampler(frames.select(demo))
        bc = ctx.steps(cfg.bc_steps, self.learner.bc_step, sampler, "bc warm start")
        row = dict.fromkeys(UPDATE_COLUMNS, math.nan)  # no critic yet: null in metrics.jsonl
        row["bc_loss"] = mean_metric(bc[-100:], "bc/loss")
        self._finish(0, stats, row, start)

    def import_demos(self) -> CollectStats:
        """Algorithm 1, line 1 from a dataset: `cfg.demos`'s episodes (`plan_demos`) stored
        as iteration 0's demonstrations, in batches; an interrupted import goes on after the
        episodes it stored (the dataset must stay until iteration 0's checkpoint)."""
        done = CollectStats.from_store(self.store, iteration=0).episodes
        plan = plan_demos(self.cfg, self.env)
        if plan.notice and not done:
            print(f"aloe train: notice: --demos ({self.cfg.demos}): {plan.notice}", file=sys.stderr)
        for episodes in plan.episodes(start=done):
            self.store.append(episodes)
        return CollectStats.from_store(self.store, iteration=0)

    def iteration(self, k: int) -> None:
        """Algorithm 1, line 3 (collection), the algorithm's update (lines 4–15 for ALOE,
        `aloe.algos.aloe.update`), then evaluation and a checkpoint."""
        cfg = self.cfg
        learner = self._learner()
        start = time.time()
        algo = self.algorithm
        if not self.simulated:  # the robot's, sent through `aloe serve`
            stats = CollectStats.from_store(self.store, iteration=k)
        elif algo.collect is None:
            stats = self.collect_with_operator(k)
        else:
            own = algo.settings(cfg)
            stats = algo.collect(
                CollectContext(cfg, own, k, learner, self.env, self.store, self.obs)
            )
        frames = self.frames()  # read once; each update builds the sampler it needs
        learner.generator.manual_seed(episode_seed(cfg.seed, k, 0) ^ 0x5EED)
        assert algo.update is not None  # `run` iterates only algorithms with an update
        row = algo.update(self._update_context(k, frames, stats.env_steps))
        self._finish(k, stats, row, start)

    def collect_with_operator(self, k: int) -> CollectStats:
        """Algorithm 1, line 3: π_{k−1} acts, the operator takes over and corrects."""
        policy = self._policy(k - 1, seed=self.cfg.seed)
        return self._collect(k, self.cfg.collect, policy=policy)

    def _update_context(self, k: int, frames: Frames, env_steps: int = 0) -> UpdateContext:
        """What iteration k's update gets: its samplers share the iteration's seed."""
        learner = self._learner()
        cfg = self.cfg
        clock = cfg.clock_limit()

        def sampler(rows: Frames) -> ChunkSampler:
            seed = episode_seed(cfg.seed, k, 0)
            return ChunkSampler(
                rows,
                horizon=cfg.horizon,
                gamma=cfg.optim.gamma,
                seed=seed,
                device=learner.device,
                time_limit=clock,
            )

        settings = self.algorithm.settings(cfg)
        return UpdateContext(cfg, settings, k, frames, learner, sampler, env_steps)

    # --- pieces ----------------------------------------------------------------------------

    def _learner(self) -> Learner:
        assert self.learner is not None
        return self.learner

    def _build_learner(self, *args: Any, **kwargs: Any) -> Learner:
        return build_learner(*args, **kwargs)  # a learner process's rank shares rank 0's

    def _tensorboard(self, purge_step: int) -> Any:
        return _tensorboard(self.root / "tb", purge_step=purge_step)

    def _policy(self, version: int, seed: int) -> FlowChunkPolicy | BestOfNPolicy:
        """π as the run acts in collection and evaluation (best of N with `aloe.best_of_n`)."""
        learner = self._learner()
        policy = FlowChunkPolicy(
            learner.actor,
            version=version,
            exec_horizon=self.cfg.exec_horizon,
            seed=seed,
            device=learner.device,
            obs=self.obs,
        )
        return acting_policy(policy, learner.critic, self.cfg, self.cfg.clock_limit())

    def _instruction_features(self) -> torch.Tensor | None:
        return self.obs.instruction_features(self.root / "dataset" / "cache")

    def _collect(self, k: int, rule: CollectConfig, policy: Any) -> CollectStats:
        """Collect for iteration k, counting what an interrupted attempt already stored."""
        stats = CollectStats.from_store(self.store, iteration=k)
        if self.workers is not None:  # on Ray actors; the driver assigns seeds and commits
            self.workers.set_policy(policy and policy.actor, k - 1, seed=self.cfg.seed)
            return self.workers.collect(k, rule, self.store, stats, self.cfg.progress)
        seeds: Iterator[int] = (
            episode_seed(self.cfg.seed, k, i) for i in itertools.count(stats.episodes)
        )
        assert self.operator is not None  # a robot run collects nothing in-process
        _, stats = collect(
            self.env,
            self.operator,
            rule,
            policy=policy,
            seeds=seeds,
            store=self.store,
            iteration=k,
            progress=self.cfg.progress,
            stats=stats,
        )
        return stats

    def frames(self) -> Frames:
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

    def _evaluate(self, k: int) -> dict[str, Any]:
        """Iteration k's success columns: π_k evaluated operator-free on fixed seeds."""
        cfg = self.cfg
        final = k == self.final_iteration and cfg.final_eval_episodes
        seeds = [
            EVAL_SEED + i for i in range(cfg.final_eval_episodes if final else cfg.eval_episodes)
        ]
        if self.workers is not None:
            self.workers.set_policy(self._learner().actor, k, seed=EVAL_SEED)
            result = self.workers.evaluate(seeds, cfg.eval_batch)
        else:
            result = evaluate(
                self.eval_env,
                self._policy(k, seed=EVAL_SEED),
                seeds,
                cfg.progress,
                batch=cfg.eval_batch,
            )
        return {
            "success_rate": result.success_rate,
            "mean_steps_to_success": result.mean_steps_to_success,
            "eval_episodes": len(seeds),
            **_by_task(result),
        }

    def _finish(self, k: int, stats: CollectStats, row: dict[str, Any], start: float) -> None:
        cfg = self.cfg
        success = self._evaluate(k) if self.simulated else robot_success(k, stats)
        prev = self.history[-1] if self.history else {}
        metrics = {
            "iteration": k,
            **success,
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
            **({} if self.workers is None else {"broadcast_s": self.workers.take_broadcast_s()}),
            "wall_s": time.time() - start,
        }
        self.history.append(metrics)
        state = {"learner": self._learner().state_dict(), "history": self.history}
        checkpoint.save(self.root / "checkpoints", k, state)
        _write_jsonl(self.root / "metrics.jsonl", self.history)
        flat = {
            **metrics,
            **{
                f"{key}/{t}": v
                for key in ("success_by_task",)
                for t, v in metrics.get(key, {}).items()
            },
        }
        for key, value in flat.items():
            if isinstance(value, int | float) and key != "iteration" and math.isfinite(value):
                self.writer.add_scalar(f"aloe/{key}", value, k)
        self.writer.flush()
        left = time_left(self.history, self.final_iteration)
        say(iteration_line(metrics, self.final_iteration, left), cfg.progress)
        if self.on_iteration is not None:
            self.on_iteration(dict(metrics))

    def restore(self, state: dict[str, Any]) -> None:
        self.learner = build_learner(self.cfg, obs=self.obs)
        self.learner.load_state_dict(state["learner"])
        self.history = state["history"]
        _write_jsonl(self.root / "metrics.jsonl", self.history)


def _by_task(result: Any) -> dict[str, Any]:
    """A multi-task run's per-task success and steps to success (none for one task)."""
    if len(set(result.tasks)) < 2:
        return {}
    by = result.by_task()
    return {
        "success_by_task": {t: r["success_rate"] for t, r in by.items()},
        "steps_to_success_by_task": {
            t: json_safe(r)["mean_steps_to_success"] for t, r in by.items()
        },
    }


def json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """NaN (e.g. steps to success when nothing succeeded) is written as null: valid JSON."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _tensorboard(path: Path, purge_step: int) -> Any:
    from torch.utils.tensorboard import SummaryWriter  # late: slow to import, for training only

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


# The fields a resumed run may change: they do not change what it computes.
RESUME_OPTIONS = ("device", "progress")


def prepare_run(cfg: TrainConfig, resume: bool) -> TrainConfig:
    """Check the config, the run directory and this machine; write nothing. Returns the
    config to train with: `cfg` resolved, or to resume, the run `cfg.out` as `resumed_config`
    reads it (with cfg's RESUME_OPTIONS)."""
    if resume:
        cfg = resumed_config(cfg.out, **{k: getattr(cfg, k) for k in RESUME_OPTIONS})
        check_run_data(cfg.out)
    else:
        cfg.validate()
        cfg = cfg.resolved()
        check_run_dir(cfg.out, "--out", resume=False)
    check_run(cfg)
    check_machine(cfg)
    if cfg.demos is not None and not resume:
        cfg = with_robot(cfg)  # a robot run's sizes, from its dataset (aloe.run_robot)
        plan_demos(cfg)
    if resume and not simulated(cfg.task):
        check_robot_episodes(cfg)
    return cfg


def resumed_config(
    run_dir: Path, device: str | None = None, progress: bool | None = None
) -> TrainConfig:
    """The config of the run in `run_dir`, wherever that now is (its config.json, validated
    as flags are; `out` = run_dir), with `device` and `progress` changed where given (a
    progress of None keeps the run's)."""
    check_run_dir(run_dir, "--resume", resume=True)
    cfg = TrainConfig.load(run_dir)
    cfg.device = cfg.device if device is None else device
    cfg.progress = cfg.progress if progress is None else progress
    cfg.validate()
    return cfg


def train(
    cfg: TrainConfig,
    resume: bool = False,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run Algorithm 1 in `cfg.out`, or with `resume` continue the run there (see
    `prepare_run`). Every check, and building what can still fail, comes before any write.
    `on_iteration` gets each iteration's metrics.jsonl row once its checkpoint is saved (an
    exception it raises stops the run there; `resume` continues it). With Ray workers or
    several learner processes, `aloe.distributed.launch.train` runs it in the same order
    (this module does not import aloe.distributed: no import cycle)."""
    cfg = prepare_run(cfg, resume)
    torch.manual_seed(cfg.seed)
    with run_lock(cfg, resume):
        try:
            trainer = Trainer(cfg)
        except (ImportError, FileNotFoundError) as e:  # the vision extra, a SigLIP checkpoint
            raise UsageError(str(e)) from None
        if not resume:
            start_run_dir(cfg)
        say_banner(trainer)
        trainer.on_iteration = on_iteration
        history = trainer.run()
        write_report(cfg.out, "aloe train")  # with its plots; a failure only warns
    return history


def say_banner(trainer: Trainer) -> None:
    """The run's opening lines on stderr (aloe.run_summary.banner)."""
    cfg = trainer.cfg
    algo = trainer.algorithm
    last = checkpoint.latest(cfg.out / "checkpoints")
    start = 0 if last is None else last[0] + 1
    text = banner(cfg, algo.label, algo.iterates, algo.collect is not None, start)
    say(text, cfg.progress)
