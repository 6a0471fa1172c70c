"""Raw environment stepping against collection and evaluation, and one iteration's phases.

Collection runs `aloe.collect.collect` with the scripted operator, one episode at a time
into a crash-safe store, exactly as training does; evaluation runs `aloe.collect.evaluate`.
The policy and the operator are wrapped in timers, so each figure also comes with policy
inference and operator time per step, and a rate with inference excluded: the rollout's
own overhead (recording, rewind snapshots, store appends) against raw `env.step`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from aloe import checkpoint
from aloe.algos.aloe import AloeLearner
from aloe.collect import CollectConfig, collect, evaluate
from aloe.config import TrainConfig
from aloe.data import Frames
from aloe.datasets.sampler import ChunkSampler
from aloe.datasets.store import EpisodeStore
from aloe.envs.registry import make_env
from aloe.operators.base import Operator
from aloe.operators.profiles import make_operator
from aloe.policies.base import BatchChunkPolicy, ChunkPolicy
from aloe.policies.chunk_policy import FlowChunkPolicy, RandomPolicy
from aloe.rollout import batchable
from aloe.speed.learner import Sized, aloe_learner
from aloe.speed.measure import say, time_calls

ITERATION_METHOD = (
    "per phase: the unit costs measured here (a collected episode, an update "
    "step with its batch, an evaluation episode, a checkpoint) times the "
    "preset's counts; collect assumes the measured success rate, evaluate the "
    "untrained actor's episodes (to the time limit: an upper bound)"
)


class TimedPolicy:
    """A `ChunkPolicy` that adds up the time spent in `act_chunk` (policy inference)."""

    def __init__(self, policy: ChunkPolicy) -> None:
        self.policy = policy
        self.seconds = 0.0
        self.version = policy.version
        self.exec_horizon = policy.exec_horizon

    def reset(self, seed: int) -> None:
        self.policy.reset(seed)

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        start = time.perf_counter()
        chunk = self.policy.act_chunk(obs)
        self.seconds += time.perf_counter() - start
        return chunk


class TimedBatchPolicy(TimedPolicy):
    """A `TimedPolicy` over a `BatchChunkPolicy`: also times `act_chunks`, so evaluation
    plays its episodes together as a run's does (`aloe.rollout.batchable`)."""

    def episode_rng(self, seed: int) -> Any:
        return cast(BatchChunkPolicy, self.policy).episode_rng(seed)

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:  # beside act_chunks: `batchable`
        return super().act_chunk(obs)

    def act_chunks(self, obs: Sequence[dict[str, Any]], rngs: Sequence[Any]) -> np.ndarray:
        start = time.perf_counter()
        chunks = cast(BatchChunkPolicy, self.policy).act_chunks(obs, rngs)
        self.seconds += time.perf_counter() - start
        return chunks


class TimedOperator:
    """An `Operator` that adds up the time spent in each of its calls."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.seconds = 0.0

    def _time(self, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args)
        self.seconds += time.perf_counter() - start
        return out

    def reset(self, seed: int) -> None:
        self._time(self.operator.reset, seed)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        return self._time(self.operator.act, obs)

    def start_watching(self) -> None:
        self._time(self.operator.start_watching)

    def watch(self, obs: dict[str, Any], info: dict[str, Any]) -> str | None:
        return self._time(self.operator.watch, obs, info)

    def take_over(self, reason: str, history: list[dict[str, Any]]) -> int:
        return self._time(self.operator.take_over, reason, history)


def raw_stepping(env: Any, steps: int, segments: int = 3) -> dict[str, float]:
    """`env.step` with uniform random actions, resetting at episode ends: the floor every
    other rate is compared with. The fastest of `segments` runs of steps/segments steps
    (as the matmul peak is a best-of), so that one stall on a busy machine does not
    flatter every ratio."""
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    each = max(1, steps // segments)
    rates = []
    for _ in range(segments):
        start = time.perf_counter()
        for _ in range(each):
            _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_dim))
            if term or trunc:
                env.reset(seed=int(rng.integers(1000)))
        rates.append(each / (time.perf_counter() - start))
    return {"steps": each * segments, "steps_per_s": max(rates)}


def collection(
    env: Any,
    operator: Operator,
    policy: ChunkPolicy | None,
    steps: int,
    store: EpisodeStore,
    raw: float,
    rule: CollectConfig,
) -> dict[str, float]:
    """Whole episodes collected with the operator (policy None: demonstrations) by `rule`
    (a run's collection rule; its quotas are ignored) until at least `steps` steps, each
    appended to `store` as it ends."""
    one = dataclasses.replace(rule, success_quota=10**9, max_episodes=1)
    timed_op = TimedOperator(operator)
    timed = None if policy is None else TimedPolicy(policy)
    seeds = itertools.count()
    done = 0
    episodes = 0
    successes = 0
    start = time.perf_counter()
    while done < steps:
        _, stats = collect(
            env, timed_op, one, policy=timed, seeds=seeds, store=store, progress=False
        )
        done += stats.env_steps
        episodes, successes = episodes + 1, successes + stats.successes
    elapsed = time.perf_counter() - start
    figures = _rates(done, elapsed, raw, timed.seconds if timed else 0.0, timed_op.seconds)
    return {
        **figures,
        "episodes": episodes,
        "successes": successes,
        "episode_s": elapsed / episodes,
    }


def evaluation(
    env: Any, policy: ChunkPolicy, steps: int, raw: float, batch: int = 1
) -> dict[str, float]:
    """Operator-free episodes through `evaluate`, `batch` seeds played together (a run's
    `eval_batch`), until >= `steps` steps."""
    timed = TimedBatchPolicy(policy) if batch > 1 and batchable(policy) else TimedPolicy(policy)
    done = 0
    episodes = 0
    start = time.perf_counter()
    while done < steps:
        done += evaluate(env, timed, range(episodes, episodes + batch), batch=batch).env_steps
        episodes += batch
    elapsed = time.perf_counter() - start
    return {
        **_rates(done, elapsed, raw, timed.seconds),
        "episodes": episodes,
        "batch": batch,
        "episode_s": elapsed / episodes,
    }


def _rates(
    steps: int, elapsed: float, raw: float, inference: float = 0.0, operator: float = 0.0
) -> dict[str, float]:
    rest = elapsed - inference
    return {
        "steps": steps,
        "steps_per_s": steps / elapsed,
        "vs_raw": steps / elapsed / raw,
        "inference_ms_per_step": 1e3 * inference / steps,
        "operator_ms_per_step": 1e3 * operator / steps,
        "steps_per_s_excl_inference": steps / rest,
        "vs_raw_excl_inference": steps / rest / raw,
    }


def sampler_ms(
    frames: Frames, horizon: int, batch_size: int, gamma: float, device: torch.device
) -> float:
    """Median time of one `ChunkSampler.sample` batch on these frames (20 batches)."""
    sampler = ChunkSampler(frames, horizon=horizon, gamma=gamma, device=device)
    return 1e3 * time_calls(lambda: sampler.sample(batch_size), 20, device=device).median


def sampler_vs_critic(
    frames: Frames, task: str, horizon: int, batch_size: int, device: torch.device
) -> dict[str, float]:
    """The sampler against a critic and an actor step of the library's default networks, at
    this horizon and batch (the figures `aloe bench` has reported since it began)."""
    cfg = TrainConfig(task=task, horizon=horizon, device=str(device))
    cfg.optim = dataclasses.replace(cfg.optim, batch_size=batch_size)
    torch.manual_seed(0)
    learner = aloe_learner(cfg.resolved())
    sampler = ChunkSampler(frames, horizon=horizon, gamma=cfg.optim.gamma, device=device)
    sample = time_calls(lambda: sampler.sample(batch_size), 20, device=device).median
    critic_s = time_calls(
        lambda: learner.critic_step(sampler.sample(batch_size)), 2, device=device
    ).median
    actor_s = time_calls(
        lambda: learner.actor_step(sampler.sample(batch_size)), 2, device=device
    ).median
    return {
        "horizon": horizon,
        "batch": batch_size,
        "batches_per_s": 1 / sample,
        "critic_steps_per_s": 1 / critic_s,
        "actor_steps_per_s": 1 / actor_s,
        "vs_critic_step": critic_s / sample,
    }


def checkpoint_s(learner: AloeLearner, root: Path, repeats: int = 3) -> float:
    """Median time of `checkpoint.save` of the learner's state (written, fsynced)."""
    iterations = itertools.count()
    state = {"learner": learner.state_dict(), "history": []}
    return time_calls(lambda: checkpoint.save(root, next(iterations), state), repeats).median


def measure_iteration(
    s: Sized, figures: dict[str, Any], frames: Frames, root: Path
) -> dict[str, Any]:
    """`iteration_phases` of `s`, given its steps and the loop's figures, after timing what
    they lack: a batch of `s`'s size from the sampler, and a checkpoint."""
    say(f"{s.name} iteration: a sampler batch and a checkpoint, then the phases")
    c = s.cfg
    batch_ms = sampler_ms(frames, c.horizon, c.optim.batch_size, c.optim.gamma, s.device)
    save_s = checkpoint_s(s.learner, root / "checkpoints")
    return iteration_phases(s, figures["steps"][s.name], figures["loop"], batch_ms, save_s)


def iteration_phases(
    s: Sized, steps: dict[str, Any], loop: dict[str, Any], batch_ms: float, save_s: float
) -> dict[str, Any]:
    """One iteration of `s`'s preset split into its phases (ITERATION_METHOD), and a whole
    run's estimate: the BC warm start (demonstrations, BC steps) then `iterations` of them."""
    cfg = s.cfg
    a = s.cfg.aloe
    policy = loop["collect_policy"]
    parts = steps["actor_parts"]
    success = policy["successes"] / policy["episodes"]
    episodes = (
        cfg.collect.max_episodes
        if success == 0
        else min(cfg.collect.max_episodes, math.ceil(cfg.collect.success_quota / success))
    )
    phases = {
        "collect_s": episodes * policy["episode_s"],
        "critic_s": a.critic_steps * (steps["critic_step"]["ms"] + batch_ms) / 1e3,
        "actor_s": a.actor_steps * (steps["actor_step"]["ms"] + batch_ms) / 1e3,
        "evaluate_s": cfg.eval_episodes * loop["evaluate"]["episode_s"],
        "checkpoint_s": save_s,
    }
    total = sum(phases.values())
    bc_ms = sum(parts[k]["ms"] for k in ("flow_forward", "flow_backward", "optimiser"))
    if "onestep_distil" in parts:  # μ follows every onestep_bc_every-th BC step
        bc_ms += parts["onestep_distil"]["ms"] / a.onestep_bc_every
    warm = (
        cfg.num_demos * loop["collect_demo"]["episode_s"]
        + cfg.bc_steps * (bc_ms + batch_ms) / 1e3
        + phases["evaluate_s"]
        + save_s
    )
    return {
        "preset": s.name,
        "method": ITERATION_METHOD,
        "collect_episodes": episodes,
        "batch_ms": batch_ms,
        **phases,
        "total_s": total,
        **{f"{k[:-2]}_share": v / total for k, v in phases.items()},
        "warm_start_s": warm,
        "run_estimate_s": warm + cfg.iterations * total,
    }


def measure_loop(s: Sized, steps: int, root: Path) -> tuple[dict[str, Any], Frames]:
    """Raw stepping, demonstrations, takeovers of a random policy and of `s`'s actor, and
    evaluation of that actor; returns the figures and the frames collected with the actor."""
    cfg = s.cfg
    env = make_env(cfg.env)  # the task's TaskEnv (MetaWorld) or OGBenchEnv
    say(f"raw stepping ({steps} steps of {cfg.task})")
    out: dict[str, Any] = {"raw": raw_stepping(env, steps)}
    raw = out["raw"]["steps_per_s"]
    operator = make_operator(cfg.task, cfg.operator)
    actor = FlowChunkPolicy(
        s.learner.actor,
        version=0,
        exec_horizon=cfg.exec_horizon,
        seed=0,
        device=s.device,
        obs=s.obs,
    )
    runs = {
        "collect_demo": None,
        "collect_random": RandomPolicy(env.action_dim, cfg.horizon),
        "collect_policy": actor,
    }
    for name, policy in runs.items():
        say(f"{name.replace('_', ' ')} (>= {steps} steps)")
        sim = env.sim_state_dim if cfg.collect.record_sim_state else None
        store = EpisodeStore.create(
            root / name,
            fps=1.0 / env.control_period,
            state_dim=env.state_dim,
            action_dim=env.action_dim,
            sim_state_dim=sim,
        )
        out[name] = collection(env, operator, policy, steps, store, raw, cfg.collect)
    say(f"evaluate (>= {steps} steps, {cfg.eval_batch} episodes at a time)")
    out["evaluate"] = evaluation(env, actor, steps, raw, cfg.eval_batch)
    return out, Frames(EpisodeStore.open(root / "collect_policy").load_frames())
