"""The one rollout loop: an episode of a `ChunkPolicy`, run in chunks (Algorithm 1, line 3).

Collection, evaluation, the evaluation suite and PPO's on-policy rollouts all run their
episodes here; the environment is anything with the `aloe.envs.base.EpisodeEnv` members.

The policy acts in chunks (the first `exec_horizon` actions of each) while a watcher (the
operator, Appendix B) judges every step. A policy fragment ends at success, at a failure
the environment detects, at the time limit, or at the watcher's alarm; every end but
success and a plain truncation is labelled a failure (Eq. 14: −C_fail, terminated;
Section IV-A), the time limit too where `label_time_limit` says so (collection: the
operator takes over there). With an operator, the world is then put back to the failure
state (or the last safe state before an irrecoverable one) and the operator completes the
task: a `human` fragment. With `Takeover.handback_steps > 0` the operator hands control
back after that many steps, and the cycle may repeat, so one episode can hold several
policy and human fragments.

Optional parts: a `StepHook` acts on the world around every step (a perturbation), and a
`Recorder` keeps what happened: `EpisodeRecorder` the store's per-step columns, the
evaluation's `Trajectory` a light record of states and rewards.

`PolicyFragment` is the policy's part as a step-at-a-time object, so that `lockstep` can run
a batch of simulators together with the same rules, one policy call for every fragment that
needs a chunk: `play_batch` plays operator-free episodes that way (the evaluation), `play` in
`aloe.evaluation.rollout` continues restored simulator states.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from aloe import data as D
from aloe.envs.base import LENT, EpisodeEnv, Info, Obs
from aloe.operators.base import Operator
from aloe.policies.base import BatchChunkPolicy, ChunkPolicy

HISTORY = 128  # snapshots kept for the operator's rewind; longer rewinds are clamped to it


class Watcher(Protocol):
    """The operator's failure judgement without its hands (`Operator.watch`)."""

    def start_watching(self) -> None: ...

    def watch(self, obs: Obs, info: Info) -> str | None: ...


class StepHook(Protocol):
    """Something done to the world around each step (a perturbation).

    `env` is the rollout's environment; typed `Any` because a hook reaches into one
    backend (a MuJoCo push needs MetaWorld's simulator), not the protocol.
    """

    def before_step(self, env: Any, t: int, action: np.ndarray) -> np.ndarray:
        """Called before step t of the rollout; returns the action to execute."""

    def after_step(self, env: Any, t: int) -> None:
        """Called after step t."""


class Step(NamedTuple):
    """One executed step, as a recorder receives it."""

    obs: Obs  # the observation the action was taken from
    action: np.ndarray  # what was sent to the environment (after any hook), unclipped
    next_obs: Obs
    reward: float
    terminated: bool
    truncated: bool
    info: Info
    source: str  # demo | policy | human
    version: int  # the policy's version; -1 for the operator
    fragment: int  # the fragment's index within the episode
    chunk_start: bool  # the first action of a chunk (policy fragments)
    sim_state: np.ndarray | None  # the simulator before the step, if the recorder wants it


class Recorder(Protocol):
    record_sim_state: bool  # capture `EpisodeEnv.sim_state()` before every step

    def add(self, step: Step) -> None:
        """One step taken."""

    def relabel_end(self, *, reward: float, done: bool, truncated: bool, reason: str) -> None:
        """Relabel the last step: a fragment cut by a takeover ends in a labelled failure."""


class EpisodeRecorder:
    """The per-step columns of one episode (and its camera images, if any), as stored."""

    def __init__(self, record_sim_state: bool = True) -> None:
        self.record_sim_state = record_sim_state
        self.cols: dict[str, list[Any]] = {k: [] for k in D.STEP_COLUMNS}
        if record_sim_state:
            self.cols[D.SIM_STATE] = []

    def add(self, step: Step) -> None:
        values = {
            D.STATE: step.obs["state"],
            D.NEXT_STATE: step.next_obs["state"],
            D.ACTION: step.action,
            D.REWARD: step.reward,
            D.DONE: step.terminated,
            D.TRUNCATED: step.truncated,
            D.SUCCESS: step.info["success"],
            D.INTERVENTION: step.source == "human",
            D.SOURCE: step.source,
            D.POLICY_VERSION: step.version,
            D.FRAGMENT: step.fragment,
            D.FAILURE_REASON: step.info["failure_reason"],
            D.SIM_STATE: step.sim_state,
        }
        # the images are the view before the step, aligned with observation.state
        for camera, image in step.obs.get("images", {}).items():
            values[D.image_key(camera)] = image
            self.cols.setdefault(D.image_key(camera), [])
        for k, lst in self.cols.items():
            lst.append(values[k])

    def relabel_end(self, *, reward: float, done: bool, truncated: bool, reason: str) -> None:
        self.cols[D.REWARD][-1] = reward
        self.cols[D.DONE][-1] = done
        self.cols[D.TRUNCATED][-1] = truncated
        self.cols[D.FAILURE_REASON][-1] = reason

    def episode(self, env: EpisodeEnv, meta: dict[str, Any]) -> D.Episode:
        steps = {k: np.asarray(v, dtype=column_dtype(k)) for k, v in self.cols.items()}
        return D.Episode(task=env.task, instruction=env.instruction, steps=steps, meta=meta)


def column_dtype(column: str) -> Any:
    """The numpy dtype an episode column is stored with."""
    if column.startswith(D.IMAGE_PREFIX):
        return np.uint8
    return D.STEP_COLUMNS.get(column, np.float64)


@dataclass
class Counts:
    """What one rollout did."""

    steps: int = 0
    policy_steps: int = 0
    operator_steps: int = 0  # demonstration and correction steps
    takeovers: int = 0
    success: bool = False  # the last step succeeded
    failure_reason: str = ""  # why the last policy fragment was cut ("" if it was not)
    truncated: bool = False  # the last policy fragment hit the time limit without a label


@dataclass(frozen=True)
class Takeover:
    """How the operator's corrections run (collection's rule, Appendix B)."""

    handback_steps: int = 0  # 0: the operator completes the task; > 0: hands back after these
    operator_max_steps: int = 400  # steps the operator may take to complete the task
    max_takeovers: int = 3  # per episode; the last one is always completed


class Stepper:
    """Steps one environment: the hook around the step, the step recorded and counted."""

    def __init__(
        self, env: EpisodeEnv, recorder: Recorder | None = None, hook: StepHook | None = None
    ) -> None:
        self.env = env
        self.recorder = recorder
        self.hook = hook
        self.counts = Counts()  # `steps` is also the hook's clock: steps of this rollout

    def __call__(
        self,
        obs: Obs,
        action: np.ndarray,
        *,
        source: str,
        version: int,
        fragment: int,
        chunk_start: bool = False,
    ) -> Step:
        env = self.env
        hook = self.hook
        t = self.counts.steps
        if hook is not None:
            action = hook.before_step(env, t, action)
        rec = self.recorder
        sim = env.sim_state() if rec is not None and rec.record_sim_state else None
        nxt, reward, term, trunc, info = env.step(action)
        if hook is not None:
            hook.after_step(env, t)
        step = Step(
            obs, action, nxt, reward, term, trunc, info, source, version, fragment, chunk_start, sim
        )
        if rec is not None:
            rec.add(step)
        self.counts.steps += 1
        self.counts.success = bool(info["success"])
        if source == "policy":
            self.counts.policy_steps += 1
        else:
            self.counts.operator_steps += 1
        return step


class PolicyFragment:
    """The policy in control, one action at a time: `give` it a chunk whenever `needs_chunk`,
    `advance` until `ended`. Then `success`, `reason` (the failure label, "" if none) and
    `truncated` say how it ended, and `history` holds a snapshot after each step (oldest
    first, the last one the end state) when `keep_history`."""

    def __init__(
        self,
        step: Stepper,
        obs: Obs,
        *,
        version: int,
        fragment: int = 0,
        watcher: Watcher | None = None,
        keep_history: bool = False,
        label_time_limit: bool = False,
    ) -> None:
        self.step = step
        self.obs = obs
        self.version = version
        self.fragment = fragment
        self.watcher = watcher
        self.keep_history = keep_history
        self.label_time_limit = label_time_limit
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.queue: list[np.ndarray] = []
        self.fresh = False  # the next action starts a chunk
        self.ended = self.success = self.truncated = False
        self.reason = ""
        step.env.hand_to("policy")

    @property
    def needs_chunk(self) -> bool:
        return not self.queue and not self.ended

    def give(self, actions: np.ndarray | Sequence[np.ndarray]) -> None:
        """The actions to execute next (a chunk's executed part, (n, A))."""
        self.queue, self.fresh = list(actions), True

    def advance(self) -> None:
        env = self.step.env
        s = self.step(
            self.obs,
            self.queue.pop(0),
            source="policy",
            version=self.version,
            fragment=self.fragment,
            chunk_start=self.fresh,
        )
        self.obs = s.next_obs
        self.fresh = False
        if self.keep_history:
            self.history.append(env.snapshot())
        if s.info["success"]:
            self.ended = self.success = True
            return
        reason = s.info["failure_reason"] or (
            "timeout" if s.truncated and self.label_time_limit else ""
        )
        if not reason and not (s.terminated or s.truncated) and self.watcher is not None:
            alarm = self.watcher.watch(self.obs, s.info)
            reason = f"takeover: {alarm}" if alarm else ""
        if reason:
            # Section IV-A: the cut fragment is labelled with a failure outcome.
            if self.step.recorder is not None:
                self.step.recorder.relabel_end(
                    reward=env.reward(success=False, failed=True),
                    done=True,
                    truncated=False,
                    reason=reason,
                )
            self.ended = True
            self.reason = reason
        elif s.terminated or s.truncated:
            self.ended = True
            self.truncated = s.truncated

    def run(self, policy: ChunkPolicy) -> None:
        """Act until the fragment ends, sampling a chunk whenever the last one is used up."""
        while not self.ended:
            if self.needs_chunk:
                self.give(policy.act_chunk(self.obs)[: policy.exec_horizon])
            self.advance()


def play_episode(
    env: EpisodeEnv,
    seed: int,
    *,
    policy: ChunkPolicy | None,
    operator: Operator | None = None,
    takeover: Takeover | None = None,
    recorder: Recorder | None = None,
    hook: StepHook | None = None,
    label_time_limit: bool = False,
) -> Counts:
    """One episode from the seeded reset: an operator demonstration (policy=None), the
    policy alone (operator=None), or the policy with the operator watching and taking over."""
    obs, _ = env.reset(seed=seed)
    if operator is not None:
        operator.reset(seed)
    if policy is not None:
        policy.reset(seed)
    step = Stepper(env, recorder, hook)
    if policy is None:
        if operator is None:
            raise ValueError("an episode needs a policy, an operator or both")
        operate(step, operator, obs, source="demo", fragment=0, budget=env.max_steps)
        return step.counts
    rule = takeover or Takeover()
    fragment = 0
    while True:
        if operator is not None:
            operator.start_watching()
        part = PolicyFragment(
            step,
            obs,
            version=policy.version,
            fragment=fragment,
            watcher=operator,
            keep_history=operator is not None,
            label_time_limit=label_time_limit,
        )
        part.run(policy)
        step.counts.failure_reason = part.reason
        step.counts.truncated = part.truncated
        if operator is None or not part.reason:
            break
        fragment += 1
        obs, handed_back = correct(step, operator, part, rule, fragment)
        if not handed_back:
            break
        fragment += 1
    return step.counts


def lockstep(
    parts: Iterable[PolicyFragment],
    sample: Callable[[list[PolicyFragment]], np.ndarray],
    exec_horizon: int,
    then: Callable[[PolicyFragment], PolicyFragment | None] | None = None,
) -> None:
    """Advance policy fragments together until every one has ended. Whenever some need a
    chunk, one `sample(those)` call gives each its chunk, (n, h, A) for n fragments (the
    first `exec_horizon` actions are executed); `then(fragment)`, called as one ends, may return one to run in its place."""
    alive = list(parts)
    while alive:
        need = [p for p in alive if p.needs_chunk]
        if need:
            for part, chunk in zip(need, sample(need), strict=True):
                part.give(chunk[:exec_horizon])
        running = []
        for part in alive:
            part.advance()
            if not part.ended:
                running.append(part)
            elif then is not None and (follower := then(part)) is not None:
                running.append(follower)
        alive = running


def batchable(policy: ChunkPolicy) -> bool:
    """Whether `play_batch` may play the policy: it has `act_chunks`, from the same class as
    its `act_chunk` (a subclass that changes how one chunk is drawn, not the batch, would
    play a batch differently from one episode at a time)."""

    def owner(name: str) -> type | None:
        return next((c for c in type(policy).__mro__ if name in vars(c)), None)

    return owner("act_chunks") is not None and owner("act_chunks") is owner("act_chunk")


def play_batch(
    envs: Sequence[EpisodeEnv],
    seeds: Sequence[int],
    policy: BatchChunkPolicy,
    *,
    recorders: Sequence[Recorder | None] | None = None,
    on_end: Callable[[int, EpisodeEnv], None] | None = None,
) -> list[Counts]:
    """Operator-free episodes of `seeds`, as `play_episode(env, seed, policy=policy)` plays
    each, up to len(envs) at a time: one `act_chunks` call serves every episode that needs a
    chunk, each row drawn from its own episode's sampling state, and an env whose episode
    ends starts the next seed. `recorders[i]` records episode i; `on_end(i, env)` is called
    as it ends (the env still at its end). The counts come in the order of `seeds`."""
    counts: list[Counts] = [Counts() for _ in seeds]
    order = iter(range(len(seeds)))
    index: dict[PolicyFragment, int] = {}
    rngs: dict[PolicyFragment, Any] = {}

    def start(env: EpisodeEnv) -> PolicyFragment | None:
        i = next(order, None)
        if i is None:
            return None
        obs, _ = env.reset(seed=seeds[i])
        step = Stepper(env, recorders[i] if recorders else None)
        part = PolicyFragment(step, obs, version=policy.version)
        index[part], rngs[part], counts[i] = i, policy.episode_rng(seeds[i]), step.counts
        return part

    def sample(need: list[PolicyFragment]) -> np.ndarray:
        return policy.act_chunks([p.obs for p in need], [rngs[p] for p in need])

    def then(part: PolicyFragment) -> PolicyFragment | None:
        i = index.pop(part)
        rngs.pop(part)
        counts[i].failure_reason = part.reason
        counts[i].truncated = part.truncated
        if on_end is not None:
            on_end(i, part.step.env)
        return start(part.step.env)

    first = [part for env in envs if (part := start(env)) is not None]
    lockstep(first, sample, policy.exec_horizon, then)
    return counts


def correct(
    step: Stepper, operator: Operator, cut: PolicyFragment, rule: Takeover, fragment: int
) -> tuple[Obs, bool]:
    """The operator takes over where `cut` ended: the world put back where it says, then its
    correction (fragment `fragment`). Returns (obs, whether control goes back to the policy)."""
    env = step.env
    counts = step.counts
    counts.takeovers += 1
    obs = env.restore(cut.history[operator.take_over(cut.reason, list(cut.history))])
    last = counts.takeovers >= rule.max_takeovers or not rule.handback_steps
    env.limit = env.steps + rule.operator_max_steps
    budget = rule.operator_max_steps if last else rule.handback_steps
    obs, ended = operate(step, operator, obs, source="human", fragment=fragment, budget=budget)
    if ended or last:
        return obs, False
    if step.recorder is not None:  # handback: the operator's fragment has no outcome
        step.recorder.relabel_end(reward=-1.0, done=False, truncated=True, reason="")
    env.limit = env.steps + max(1, env.max_steps - counts.policy_steps)
    return obs, True


def operate(
    step: Stepper, operator: Operator, obs: Obs, *, source: str, fragment: int, budget: int
) -> tuple[Obs, bool]:
    """The operator acts for up to `budget` steps; returns (obs, episode ended)."""
    step.env.reset_progress()
    step.env.hand_to("operator")
    for _ in range(budget):
        s = step(obs, operator.act(obs), source=source, version=-1, fragment=fragment)
        obs = s.next_obs
        if s.terminated or s.truncated:
            return obs, True
    return obs, False


@dataclass
class Rollout:
    """A recorded episode and what it did."""

    episode: D.Episode
    counts: Counts


def record_episode(
    env: EpisodeEnv,
    seed: int,
    *,
    policy: ChunkPolicy | None,
    operator: Operator | None = None,
    takeover: Takeover | None = None,
    record_sim_state: bool = True,
    iteration: int = 0,
) -> Rollout:
    """`play_episode` recorded for the store, each cut fragment labelled (the time limit
    too: the operator takes over there, Section IV-A)."""
    rec = EpisodeRecorder(record_sim_state)
    counts = play_episode(
        env,
        seed,
        policy=policy,
        operator=operator,
        takeover=takeover,
        recorder=rec,
        label_time_limit=True,
    )
    meta = {"seed": seed, "iteration": iteration, "takeovers": counts.takeovers}
    return Rollout(rec.episode(env, meta), counts)


LENT["play_episode"] = play_episode  # the rows' C_fail runs (aloe.envs.base.LENT)
