"""Human-in-the-loop collection (Algorithm 1, line 3; Appendix B) and operator-free evaluation.

An episode starts with the policy acting in chunks while the operator watches. When the
policy fails, is about to fail (the operator's detector) or times out, its fragment is cut
and labelled a failure (Eq. 14: −C_fail, terminated), the simulator is put back to the
failure state (or the last safe state before an irrecoverable one), and the operator
completes the task from there: a `human` fragment with `is_intervention = true`. With
`handback_steps > 0` the operator hands control back after that many steps, and the cycle
may repeat, so one episode can hold several policy and human fragments.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from aloe import data as D
from aloe.envs.metaworld import TaskEnv
from aloe.operators.base import Operator

HISTORY = 128  # simulator snapshots kept for a rewind; longer rewinds are clamped to it


class ChunkPolicy(Protocol):
    version: int  # the iteration that produced the policy; stored with its fragments
    exec_horizon: int  # actions executed from each sampled chunk before replanning

    def reset(self, seed: int) -> None:
        """A new episode: reseed sampling, so each episode depends on its seed alone."""

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        """An action chunk (h, A) in [-1, 1] for one observation."""


class RandomPolicy:
    """Uniform random actions: a policy that always needs the operator."""

    def __init__(self, action_dim: int = 4, horizon: int = 10, seed: int = 0) -> None:
        self.version, self.exec_horizon = 0, horizon
        self.shape = (horizon, action_dim)
        self.seed = seed
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng([self.seed, seed])

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, self.shape).astype(np.float32)


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


class _Recorder:
    """Accumulates the per-step columns of one episode (and its camera images, if any)."""

    def __init__(self, record_sim_state: bool) -> None:
        self.cols: dict[str, list[Any]] = {k: [] for k in D.STEP_COLUMNS}
        if record_sim_state:
            self.cols[D.SIM_STATE] = []

    def add(self, obs: dict[str, Any], **values: Any) -> None:
        """One step taken from `obs`: its images are the view before the step."""
        for camera, image in obs.get("images", {}).items():
            values[D.image_key(camera)] = image
            self.cols.setdefault(D.image_key(camera), [])
        for k, lst in self.cols.items():
            lst.append(values[k])

    def mark_end(self, *, reward: float, done: bool, truncated: bool, reason: str) -> None:
        """Relabel the last step: a fragment cut by a takeover ends in a labelled failure."""
        self.cols[D.REWARD][-1] = reward
        self.cols[D.DONE][-1] = done
        self.cols[D.TRUNCATED][-1] = truncated
        self.cols[D.FAILURE_REASON][-1] = reason

    def episode(self, env: TaskEnv, meta: dict[str, Any]) -> D.Episode:
        steps = {k: np.asarray(v, dtype=_dtype(k)) for k, v in self.cols.items()}
        return D.Episode(task=env.task, instruction=env.instruction, steps=steps, meta=meta)


def _dtype(column: str) -> Any:
    if column.startswith(D.IMAGE_PREFIX):
        return np.uint8
    return D.STEP_COLUMNS.get(column, np.float64)


def _step(
    env: TaskEnv,
    rec: _Recorder,
    obs: dict[str, Any],
    action: np.ndarray,
    *,
    source: str,
    version: int,
    fragment: int,
) -> tuple[dict[str, Any], bool, bool, dict[str, Any]]:
    sim = env.sim_state() if D.SIM_STATE in rec.cols else None
    nxt, reward, term, trunc, info = env.step(action)
    rec.add(obs, **{
        D.STATE: obs["state"], D.NEXT_STATE: nxt["state"], D.ACTION: action, D.REWARD: reward,
        D.DONE: term, D.TRUNCATED: trunc, D.SUCCESS: info["success"],
        D.INTERVENTION: source == "human", D.SOURCE: source, D.POLICY_VERSION: version,
        D.FRAGMENT: fragment, D.FAILURE_REASON: info["failure_reason"], D.SIM_STATE: sim,
    })  # fmt: skip
    return nxt, term, trunc, info


def run_episode(
    env: TaskEnv,
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
    obs, _ = env.reset(seed=seed)
    operator.reset(seed)
    if policy is not None:
        policy.reset(seed)
    rec, fragment, takeovers = _Recorder(record_sim_state), 0, 0
    if policy is None:
        _operate(env, operator, rec, obs, "demo", fragment, env.cfg.max_steps)
        return rec.episode(env, {"seed": seed, "iteration": iteration, "takeovers": 0})
    while True:
        obs, ended, reason, history = _policy_fragment(env, operator, policy, rec, obs, fragment)
        if ended:
            break
        takeovers += 1
        fragment += 1
        obs = env.restore(history[operator.take_over(reason, list(history))])
        last_fragment = takeovers >= max_takeovers or not handback_steps
        env.limit = env.steps + operator_max_steps
        budget = operator_max_steps if last_fragment else handback_steps
        obs, ended = _operate(env, operator, rec, obs, "human", fragment, budget)
        if ended or last_fragment:
            break
        rec.mark_end(reward=-1.0, done=False, truncated=True, reason="")  # handback: no outcome
        fragment += 1
        used = sum(1 for s in rec.cols[D.SOURCE] if s == "policy")
        env.limit = env.steps + max(1, env.cfg.max_steps - used)
    meta = {"seed": seed, "iteration": iteration, "takeovers": takeovers}
    return rec.episode(env, meta)


def _policy_fragment(
    env: TaskEnv,
    operator: Operator,
    policy: ChunkPolicy,
    rec: _Recorder,
    obs: dict[str, Any],
    fragment: int,
) -> tuple[dict[str, Any], bool, str, deque]:
    """Run the policy until success (ended=True) or until the operator must take over."""
    operator.start_watching()
    history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
    while True:
        chunk = policy.act_chunk(obs)
        for action in chunk[: policy.exec_horizon]:
            obs, term, trunc, info = _step(
                env, rec, obs, action, source="policy", version=policy.version, fragment=fragment
            )
            history.append(env.snapshot())
            if info["success"]:
                return obs, True, "", history
            reason = info["failure_reason"] or ("timeout" if trunc else "")
            if not reason:
                alarm = operator.watch(obs, info)
                reason = f"takeover: {alarm}" if alarm else ""
            if reason:
                # Section IV-A: the cut fragment is labelled with a failure outcome.
                rec.mark_end(
                    reward=env.reward(success=False, failed=True),
                    done=True,
                    truncated=False,
                    reason=reason,
                )
                return obs, False, reason, history


def _operate(
    env: TaskEnv,
    operator: Operator,
    rec: _Recorder,
    obs: dict[str, Any],
    source: str,
    fragment: int,
    budget: int,
) -> tuple[dict[str, Any], bool]:
    """The operator acts for up to `budget` steps; returns (obs, episode ended)."""
    env.detector.reset_progress()
    for _ in range(budget):
        obs, term, trunc, _ = _step(
            env, rec, obs, operator.act(obs), source=source, version=-1, fragment=fragment
        )
        if term or trunc:
            return obs, True
    return obs, False


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


def collect(
    env: TaskEnv,
    operator: Operator,
    cfg: CollectConfig,
    *,
    policy: ChunkPolicy | None,
    seeds: Iterator[int],
    store: Any = None,
    iteration: int = 0,
    progress: bool = True,
    stats: CollectStats | None = None,
) -> tuple[list[D.Episode], CollectStats]:
    """Collect until `cfg.success_quota` successes or `cfg.max_episodes` episodes.

    Each finished episode is appended to `store` at once, so a crash loses at most the
    episode in flight.
    """
    stats = stats or CollectStats()  # what an interrupted attempt already collected
    episodes: list[D.Episode] = []
    bar = tqdm(
        total=cfg.max_episodes,
        desc=f"collect[{iteration}]",
        disable=not progress,
        leave=False,
        unit="ep",
    )
    while stats.successes < cfg.success_quota and stats.episodes < cfg.max_episodes:
        ep = run_episode(
            env,
            operator,
            next(seeds),
            policy=policy,
            handback_steps=cfg.handback_steps,
            operator_max_steps=cfg.operator_max_steps,
            max_takeovers=cfg.max_takeovers,
            record_sim_state=cfg.record_sim_state,
            iteration=iteration,
        )
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
            mine = [(n, s) for n, s, t in zip(self.lengths, self.successes, self.tasks,
                                              strict=True) if t == task]  # fmt: skip
            ok = [n for n, s in mine if s]
            out[task] = {"success_rate": float(np.mean([s for _, s in mine])),
                         "mean_steps_to_success": float(np.mean(ok)) if ok else float("nan"),
                         "episodes": len(mine)}  # fmt: skip
        return out


def evaluate(
    env: TaskEnv, policy: ChunkPolicy, seeds: Sequence[int], progress: bool = False
) -> EvalResult:
    """Roll out the policy without the operator on fixed seeds (Algorithm 1's evaluation)."""
    lengths, successes, tasks = [], [], []
    for seed in tqdm(seeds, desc="evaluate", disable=not progress, leave=False, unit="ep"):
        obs, _ = env.reset(seed=seed)
        tasks.append(env.task)
        policy.reset(seed)
        done, steps, success = False, 0, False
        while not done:
            for action in policy.act_chunk(obs)[: policy.exec_horizon]:
                obs, _, term, trunc, info = env.step(action)
                steps += 1
                if term or trunc:
                    done, success = True, bool(info["success"])
                    break
        lengths.append(steps)
        successes.append(success)
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
