"""Human-in-the-loop collection (Algorithm 1, line 3; Appendix B) and operator-free evaluation.

An episode starts with the policy acting in chunks while the operator watches. When the
policy fails, is about to fail (the operator's detector) or times out, its fragment is cut
and labelled a failure (Eq. 14: −C_fail, terminated), the simulator is put back to the
failure state (or the last safe state before an irrecoverable one), and the operator
completes the task from there: a `human` fragment with `is_intervention = true`. With
`handback_steps > 0` the operator hands control back after that many steps, and the cycle
may repeat, so one episode can hold several policy and human fragments. The episode loop
itself is `aloe.rollout`'s; this module holds the collection rule and the evaluation tally.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from aloe import data as D
from aloe.envs.base import EpisodeEnv
from aloe.envs.metaworld import TaskEnv
from aloe.errors import require
from aloe.operators.base import Operator
from aloe.policies.base import BatchChunkPolicy, ChunkPolicy
from aloe.policies.chunk_policy import ExploringPolicy
from aloe.progress import Phase
from aloe.rollout import Takeover, batchable, play_batch, play_episode, record_episode


@dataclass
class CollectStats:
    """What the operator and the robot did during a collection round."""

    episodes: int = 0
    successes: int = 0  # episodes that ended in success, with or without help
    autonomous_successes: int = 0  # ... without any takeover
    takeovers: int = 0
    env_steps: int = 0
    policy_steps: int = 0
    human_steps: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_store(cls, store: Any, iteration: int) -> CollectStats:
        """The counts of the episodes an earlier (interrupted) attempt stored for `iteration`."""
        rows = [r for r in store.episodes().to_pylist() if r["iteration"] == iteration]
        stats = cls()
        for r in rows:
            stats.episodes += 1
            stats.successes += int(r["success"])
            stats.takeovers += int(r["takeovers"])
            stats.autonomous_successes += int(r["success"] and not r["takeovers"])
            stats.env_steps += int(r["length"])
            stats.policy_steps += int(r["policy_steps"])
            stats.human_steps += int(r["human_steps"]) + int(r["demo_steps"])
            for reason in r["failure_reasons"]:
                stats.failure_reasons[reason] = stats.failure_reasons.get(reason, 0) + 1
        return stats

    def summary(self, policy: bool) -> dict[str, Any]:
        """What `aloe collect` prints: the episodes' totals, then the operator's figures and
        (with a policy) the policy's apart, so that a demonstration round shows no policy
        figures at all and a policy round no demonstrations."""
        totals = {"episodes": self.episodes, "successes": self.successes}
        operator = {"steps": self.human_steps}
        if not policy:
            return {
                "collected": "operator demonstrations",
                **totals,
                "env_steps": self.env_steps,
                "operator": {"demonstrations": self.episodes, **operator},
                "failure_reasons": self.failure_reasons,
            }
        return {
            "collected": "policy runs with the operator in the loop",
            **totals,
            "env_steps": self.env_steps,
            "policy": {
                "steps": self.policy_steps,
                "successes_without_takeover": self.autonomous_successes,
                "failure_reasons": self.failure_reasons,
            },
            "operator": {"takeovers": self.takeovers, **operator},
        }

    def add(self, ep: D.Episode) -> None:
        src = ep.steps[D.SOURCE]
        self.episodes += 1
        self.successes += int(ep.success)
        self.takeovers += int(ep.meta.get("takeovers", 0))
        self.autonomous_successes += int(ep.success and not ep.meta.get("takeovers", 0))
        self.env_steps += len(ep)
        self.policy_steps += int(np.sum(src == "policy"))
        self.human_steps += int(np.sum(src != "policy"))
        for reason in ep.steps[D.FAILURE_REASON]:
            if reason:
                self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + 1


def run_episode(
    env: EpisodeEnv,
    operator: Operator,
    seed: int,
    *,
    policy: ChunkPolicy | None,
    handback_steps: int = 0,
    operator_max_steps: int = 400,
    max_takeovers: int = 3,
    record_sim_state: bool = True,
    iteration: int = 0,
) -> D.Episode:
    """One episode: an operator demonstration (policy=None) or a policy run with takeovers."""
    rule = Takeover(handback_steps, operator_max_steps, max_takeovers)
    done = record_episode(
        env,
        seed,
        policy=policy,
        operator=operator,
        takeover=rule,
        record_sim_state=record_sim_state,
        iteration=iteration,
    )
    return done.episode


def collect_episode(
    env: EpisodeEnv,
    operator: Operator,
    seed: int,
    policy: ChunkPolicy | None,
    rule: CollectConfig,
    iteration: int,
) -> D.Episode:
    """One episode of collection under `rule` (in process or on a Ray worker alike): the
    policy with the rule's exploration noise, the rule's takeovers."""
    if policy is not None and rule.explore_std > 0:
        policy = ExploringPolicy(policy, rule.explore_std)
    return run_episode(
        env,
        operator,
        seed,
        policy=policy,
        handback_steps=rule.handback_steps,
        operator_max_steps=rule.operator_max_steps,
        max_takeovers=rule.max_takeovers,
        record_sim_state=rule.record_sim_state,
        iteration=iteration,
    )


@dataclass
class CollectConfig:
    """The paper's collection rule: until a success quota or an episode budget is reached."""

    success_quota: int = 10
    """Stop after this many successful episodes (with or without the operator's help)."""
    max_episodes: int = 30
    """... or after this many episodes, whichever comes first."""
    handback_steps: int = 0
    """0: the operator completes the task after a takeover (Appendix B); > 0: hand control
    back to the policy after this many operator steps (HG-DAgger style, more fragments)."""
    operator_max_steps: int = 400
    """Steps the operator may take to complete the task after a takeover."""
    max_takeovers: int = 3
    """At most this many takeovers per episode; the last one is always completed."""
    record_sim_state: bool = True
    """Store MuJoCo's integration state per step (evaluation restores states from it)."""
    explore_std: float = 0.0
    """Exploration while collecting, never in evaluation: Gaussian noise of this std added
    to every action the policy executes (clipped to [-1, 1]; `ExploringPolicy`), so that the
    buffer holds chunks of π that differ at its own states. 0 = π as it is (the paper)."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `collect.handback_steps (-1):
        must be >= 0`; `prefix` leads the name ("config field " for a run's config)."""
        checks: list[tuple[str, bool, str]] = [
            ("success_quota", self.success_quota >= 1, "must be >= 1"),
            ("max_episodes", self.max_episodes >= 1, "must be >= 1"),
            (
                "handback_steps",
                self.handback_steps >= 0,
                "must be >= 0 (0 = the operator completes the task)",
            ),
            ("operator_max_steps", self.operator_max_steps >= 1, "must be >= 1"),
            ("max_takeovers", self.max_takeovers >= 1, "must be >= 1"),
            (
                "explore_std",
                math.isfinite(self.explore_std) and self.explore_std >= 0,
                "must be a finite number >= 0 (0 = no exploration noise)",
            ),
        ]
        for name, ok, allowed in checks:
            require(ok, f"{prefix}collect.{name}", getattr(self, name), allowed)


def collect(
    env: EpisodeEnv,
    operator: Operator,
    cfg: CollectConfig,
    *,
    policy: ChunkPolicy | None,
    seeds: Iterator[int],
    store: Any = None,
    iteration: int = 0,
    progress: bool | None = None,
    stats: CollectStats | None = None,
) -> tuple[list[D.Episode], CollectStats]:
    """Collect until `cfg.success_quota` successes or `cfg.max_episodes` episodes.

    Each finished episode is appended to `store` at once, so a crash loses at most the
    episode in flight. `cfg` is validated first (UsageError naming the field). `progress`:
    see `aloe.progress`.
    """
    cfg.validate()
    stats = stats or CollectStats()  # what an interrupted attempt already collected
    episodes: list[D.Episode] = []
    bar = Phase(f"collect[{iteration}]", cfg.max_episodes, progress, unit="episode", at_most=True)
    while stats.successes < cfg.success_quota and stats.episodes < cfg.max_episodes:
        ep = collect_episode(env, operator, next(seeds), policy, cfg, iteration)
        if store is not None:
            store.append(ep)
        episodes.append(ep)
        stats.add(ep)
        bar.update(1)
        bar.set_postfix(
            success=stats.successes, takeovers=stats.takeovers, human_steps=stats.human_steps
        )
    bar.close()
    return episodes, stats


@dataclass
class EvalResult:
    success_rate: float
    mean_steps_to_success: float  # NaN when nothing succeeded
    episodes: int
    env_steps: int
    lengths: list[int]
    successes: list[bool]
    tasks: list[str] = field(default_factory=list)  # each episode's task

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k not in ("lengths", "successes", "tasks")}
        if len(set(self.tasks)) > 1:
            out["by_task"] = self.by_task()
        return out

    def by_task(self) -> dict[str, dict[str, float]]:
        """Success rate and mean steps to success (NaN: none succeeded) of each task."""
        out = {}
        for task in dict.fromkeys(self.tasks):
            mine = [
                (n, s)
                for n, s, t in zip(self.lengths, self.successes, self.tasks, strict=True)
                if t == task
            ]
            ok = [n for n, s in mine if s]
            out[task] = {
                "success_rate": float(np.mean([s for _, s in mine])),
                "mean_steps_to_success": float(np.mean(ok)) if ok else float("nan"),
                "episodes": len(mine),
            }
        return out


def evaluate(
    env: EpisodeEnv,
    policy: ChunkPolicy,
    seeds: Sequence[int],
    progress: bool | None = False,
    batch: int = 1,
) -> EvalResult:
    """Roll out the policy without the operator on fixed seeds (Algorithm 1's evaluation).

    `batch` > 1 plays that many episodes together (`aloe.rollout.play_batch`), on `env` and
    copies of it (`batch_envs`), with one policy call per chunk for all of them; each
    episode samples from its own seed's generator, so the outcomes are those of one
    episode at a time up to the last bits of a batched matmul. A policy that cannot play
    a batch (`aloe.rollout.batchable`), or an env that cannot be copied, plays one episode
    at a time.
    """
    bar = Phase("evaluate", len(seeds), progress, unit="episode")
    tasks = [""] * len(seeds)

    def ended(i: int, env: EpisodeEnv) -> None:
        tasks[i] = env.task
        bar.update(1)

    envs = batch_envs(env, min(batch, len(seeds))) if batchable(policy) else [env]
    if len(envs) > 1:
        runs = play_batch(envs, seeds, cast(BatchChunkPolicy, policy), on_end=ended)
    else:
        runs = []
        for i, seed in enumerate(seeds):
            runs.append(play_episode(env, seed, policy=policy))
            ended(i, env)
    bar.close()
    lengths = [c.steps for c in runs]
    successes = [c.success for c in runs]
    ok = [n for n, s in zip(lengths, successes, strict=True) if s]
    return EvalResult(
        success_rate=float(np.mean(successes)) if successes else 0.0,
        mean_steps_to_success=float(np.mean(ok)) if ok else float("nan"),
        episodes=len(seeds),
        env_steps=int(sum(lengths)),
        lengths=lengths,
        successes=successes,
        tasks=tasks,
    )


_COPIES: weakref.WeakKeyDictionary[TaskEnv, list[TaskEnv]] = weakref.WeakKeyDictionary()


def batch_envs(env: EpisodeEnv, n: int) -> list[EpisodeEnv]:
    """`env` and n − 1 copies built from its config, kept with it so that each evaluation
    of a run reuses them (building a MetaWorld env costs more than a short episode).
    Only a `TaskEnv` can be copied; any other env comes back alone."""
    if n <= 1 or not isinstance(env, TaskEnv):
        return [env]
    copies = _COPIES.setdefault(env, [])
    copies.extend(TaskEnv(env.cfg) for _ in range(n - 1 - len(copies)))
    return [env, *copies[: n - 1]]
