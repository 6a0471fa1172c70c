"""The `human` operator profile: a simulated person teleoperating in VR (Appendix A-B).

The person's plan is the scripted expert's: a noise-free `ScriptedOperator`, which also keeps
the watching, retreat and rewinding rules (`OperatorConfig`). What makes it a person is what
`HumanOperator` does around that plan (`HumanConfig` has every parameter):

- reaction time: after `take_over` the robot holds still for `reaction_steps` (0.25 s): no
  hand motion and the gripper kept as the fingers are (`hold_action`); then the takeover's
  retreat (open, lift) and the correction. A demonstration from reset starts at once (the
  person starts when ready);
- perception lag: every decision is made on the observation `lag_steps` old;
- a careful hand: horizontal motion capped at `speed`, except when pushing against
  resistance;
- noise correlated in time on the hand motion: drift (`Drift`, Ornstein-Uhlenbeck) plus
  tremor (`Tremor`, a band-limited oscillation near 9 Hz); the gripper command is the plan's;
- mistakes by segment: a segment starts when the person starts acting (at reset, after a
  takeover's reaction and retreat, after a retry's back-off) and whenever the plan's gripper
  command flips (a grasp or a release). It may carry a misjudged position (open gripper: the
  hand taken to be a few cm off, so the approach misses and the grasp may close on nothing;
  closed: the goal misjudged), a gain above 1 (overshoot), and for a grasp an early lift (the
  fingers close on air or the object's edge) or an early release (the object drops). Each
  lasts until noticed, `notice_steps`;
- retries: the experts are state machines on the observation, so an empty grasp is mostly
  retried by itself (the object is seen still on the table, the expert goes back). Where the
  closed fingers rest on the object and the expert would push forever, the person gives up
  after `retry_steps` of a blocked hand, backs off (open, lift) and tries again;
- skill: every episode draws a clumsiness factor that scales the noise and the mistakes.

The `clumsy` profile is the same person made `CLUMSINESS` times as error-prone (`clumsy`):
wrong approaches, slipped grasps, early releases and overshoots three times as likely, and
drift and tremor three times as large, so that its own corrections succeed about half of the
time (docs/concepts.md, "Operator profiles"): the operator of a loop whose labels are often
wrong.

All randomness comes from the generator seeded in `reset(seed)`: one seed, one person, one
episode, identical actions.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from aloe.errors import require

CONTROL_HZ = 80.0  # MetaWorld's control rate (aloe.envs.metaworld.CONTROL_HZ)
GRIP_CLOSED = 0.3  # the experts command >= 0.6 to close, <= 0 to open
FINGERS_OPEN = 0.95  # observation.state[3] of open fingers is 1.0, ~0.45 around a puck
SLIP_STEPS = 8  # the fingers take about 8 steps to close: a slipped grasp rises meanwhile
STEP_M = 0.01  # metres the hand moves per action unit and step (MetaWorld's action scale)
BLOCKED_MOVE = 0.2  # a commanded hand motion this large (action units, mean over the window)
BLOCKED_M = 0.005  # ... that moved the hand less than this (metres) has met an obstacle


@dataclass
class HumanConfig:
    """A simulated VR teleoperator (`--operator.profile human`). Actions are MetaWorld's:
    1 action unit of hand motion = its largest step, 1 cm per step (0.8 m/s at 80 Hz)."""

    reaction_steps: int = 20
    """Steps (80 Hz) the robot holds still after a takeover before the person acts (0.25 s)."""
    lag_steps: int = 2
    """Perception lag: the person acts on the observation this many steps old (25 ms)."""
    speed: float = 0.5
    """Largest horizontal hand motion per axis, in action units (0.5 = 0.4 m/s): people move
    more carefully than the script. Vertical motion is not capped (a slower descent makes the
    experts close the gripper too high), and against resistance (the hand moved less than
    half as far as commanded last step: pushing a peg home) the person pushes through, up
    to MetaWorld's limit of 1, as the simulator's force grows with the commanded step."""
    drift_std: float = 0.03
    """Stationary std of the slow drift of the hand motion, per axis, in action units (the
    expert's feedback turns it into a wander of the hand of ~drift_std / 10 m around where it
    is steered)."""
    drift_tau_steps: float = 40.0
    """Time constant of the drift (Ornstein-Uhlenbeck), in steps (0.5 s)."""
    tremor_std: float = 0.06
    """Std of the tremor of the hand motion, per axis, in action units."""
    tremor_hz: float = 9.0
    """Centre frequency of the tremor, in Hz (physiological tremor: 8-12 Hz)."""
    tremor_band_hz: float = 3.0
    """Bandwidth of the tremor around its centre, in Hz (its resonance's half-power width)."""
    wrong_approach_prob: float = 0.25
    """Probability that a segment starts from a misjudged hand position."""
    approach_offset_m: float = 0.03
    """Std of the misjudged horizontal position, per axis, in metres."""
    grasp_slip_prob: float = 0.15
    """Probability that a grasp lifts off too early, so the fingers close on air or slip."""
    grasp_lift_m: float = 0.03
    """How far the hand rises while the fingers close in a slipped grasp, in metres."""
    drop_prob: float = 0.15
    """Probability that the person lets go of a held object early: the trigger released
    while carrying (at a random step of the grasp's first `notice_steps`) until noticed. The
    object falls, often far from the goal, where the task fails (the paper's "release in
    the air", "object dropped")."""
    overshoot_prob: float = 0.2
    """Probability that a segment starts with too high a gain (overshoot)."""
    overshoot_gain: float = 2.0
    """Gain on the planned hand motion in an overshooting segment (1 = none)."""
    retry_steps: int = 25
    """A person whose hand has been blocked this many steps (commanded to move, not moving:
    closed fingers resting on the object, the hand pressed against it) gives up the
    attempt: opens the gripper, backs off upwards for `back_off_steps` and tries again."""
    back_off_steps: int = 10
    """Steps of opening the gripper and lifting the hand before a retry."""
    notice_steps: int = 30
    """Mean steps before a mistake is noticed and corrected (drawn uniformly in
    [notice_steps / 2, 3 notice_steps / 2])."""
    skill_spread: float = 0.4
    """Episode-to-episode skill: each episode draws a clumsiness factor exp(skill_spread·z),
    z ~ N(0, 1), that multiplies the noise stds and the mistake probabilities (capped at 1);
    0 = the same person every episode."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `operator.human.speed (0.0):
        must be a finite number in (0, 1]`."""
        checks: list[tuple[str, bool, str]] = [
            ("reaction_steps", self.reaction_steps >= 0, "must be >= 0"),
            ("lag_steps", self.lag_steps >= 0, "must be >= 0"),
            (
                "speed",
                _finite(self.speed) and 0 < self.speed <= 1,
                "must be a finite number in (0, 1]",
            ),
            (
                "drift_tau_steps",
                _finite(self.drift_tau_steps) and self.drift_tau_steps > 0,
                "must be a finite number > 0",
            ),
            (
                "tremor_hz",
                _finite(self.tremor_hz) and 0 < self.tremor_hz < CONTROL_HZ / 2,
                f"must be a finite number in (0, {CONTROL_HZ / 2:g}) (below Nyquist at 80 Hz)",
            ),
            (
                "tremor_band_hz",
                _finite(self.tremor_band_hz) and self.tremor_band_hz > 0,
                "must be a finite number > 0",
            ),
            (
                "overshoot_gain",
                _finite(self.overshoot_gain) and self.overshoot_gain >= 1,
                "must be a finite number >= 1",
            ),
            ("retry_steps", self.retry_steps >= 1, "must be >= 1"),
            ("back_off_steps", self.back_off_steps >= 1, "must be >= 1"),
            ("notice_steps", self.notice_steps >= 1, "must be >= 1"),
        ]
        for name in (
            "drift_std",
            "tremor_std",
            "approach_offset_m",
            "grasp_lift_m",
            "skill_spread",
        ):
            value = getattr(self, name)
            checks.append((name, _finite(value) and value >= 0, "must be a finite number >= 0"))
        for name in ("wrong_approach_prob", "grasp_slip_prob", "drop_prob", "overshoot_prob"):
            value = getattr(self, name)
            checks.append((name, _finite(value) and 0 <= value <= 1, "must be in [0, 1]"))
        for name, ok, allowed in checks:
            require(ok, f"{prefix}operator.human.{name}", getattr(self, name), allowed)


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


CLUMSINESS = 3.0  # the `clumsy` profile: pick-place corrections succeed ~0.5 (human: ~0.95)
MISTAKES = ("wrong_approach_prob", "grasp_slip_prob", "drop_prob", "overshoot_prob")
NOISE = ("drift_std", "tremor_std")


def clumsy(cfg: HumanConfig, factor: float = CLUMSINESS) -> HumanConfig:
    """The `clumsy` profile's person: `cfg`'s with every mistake probability times `factor`
    (at most 1) and the drift and tremor stds times `factor`; the rest (reaction, lag,
    speed, skill spread) as `cfg` has it, so that `operator.human.*` tunes both profiles."""
    probs = {k: min(1.0, factor * getattr(cfg, k)) for k in MISTAKES}
    noise = {k: factor * getattr(cfg, k) for k in NOISE}
    return dataclasses.replace(cfg, **probs, **noise)


class Drift:
    """Ornstein-Uhlenbeck noise per axis: x ← a·x + std·√(1−a²)·z, a = exp(−1/τ), started
    from its stationary law N(0, std²); `sample()` gives the next step's."""

    def __init__(self, std: float, tau_steps: float, dims: int, rng: np.random.Generator):
        self.rng, self.std, self.a = rng, std, math.exp(-1.0 / tau_steps)
        self.x = std * rng.standard_normal(dims)

    def sample(self) -> np.ndarray:
        z = self.rng.standard_normal(self.x.shape)
        self.x = self.a * self.x + self.std * math.sqrt(1 - self.a**2) * z
        return self.x


class Tremor:
    """Band-limited oscillation per axis: white noise through a resonance, an AR(2) with poles
    r·e^{±iω}, ω = 2π·hz/80 Hz, r = exp(−π·band_hz/80 Hz), scaled to the stationary std
    asked for; starts at rest. `sample()` gives the next step's."""

    def __init__(self, std: float, hz: float, band_hz: float, dims: int, rng: np.random.Generator):
        r = math.exp(-math.pi * band_hz / CONTROL_HZ)
        self.rng, self.phi = rng, (2 * r * math.cos(2 * math.pi * hz / CONTROL_HZ), -(r**2))
        p1, p2 = self.phi
        unit_var = (1 - p2) / ((1 + p2) * ((1 - p2) ** 2 - p1**2))  # AR(2) variance, unit input
        self.gain = std / math.sqrt(unit_var)
        self.last = np.zeros((2, dims))  # the last two values, newest first

    def sample(self) -> np.ndarray:
        z = self.rng.standard_normal(self.last.shape[1])
        new = self.phi[0] * self.last[0] + self.phi[1] * self.last[1] + self.gain * z
        self.last = np.stack([new, self.last[0]])
        return new


@dataclass
class Mistake:
    """The current segment's error, for `steps` more steps: the hand believed `offset`
    metres from where it is (so the expert's target is missed by `offset`), a `gain` on the
    planned motion, a rise of `lift` action units per step for the first `lift_steps` (a
    grasp lifted off before the fingers hold), and the gripper opened once `drop_in` more
    steps have passed (< 0: never)."""

    offset: np.ndarray
    gain: float = 1.0
    steps: int = 0
    lift: float = 0.0
    lift_steps: int = 0
    drop_in: int = -1


class Plan(Protocol):
    """What the person follows: a noise-free `ScriptedOperator` (the expert's actions, the
    retreat after a takeover, the watching and rewinding rules)."""

    retreat: int  # steps of the retreat still to go

    def reset(self, seed: int) -> None: ...

    def act(self, obs: dict[str, Any]) -> np.ndarray: ...

    def start_watching(self) -> None: ...

    def watch(self, obs: dict[str, Any], info: dict[str, Any]) -> str | None: ...

    def take_over(self, reason: str, history: list[dict[str, Any]]) -> int: ...


class HumanOperator:
    """Implements `aloe.operators.base.Operator`: a person (`HumanConfig`) carrying out
    `plan` (`aloe.operators.profiles.make_operator` builds both)."""

    def __init__(self, plan: Plan, cfg: HumanConfig, seed: int = 0) -> None:
        self.plan = plan
        self.cfg = cfg
        self.reset(seed)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.plan.reset(seed)
        self.clumsiness = math.exp(self.cfg.skill_spread * self.rng.standard_normal())
        cfg = self.cfg
        f = self.clumsiness
        self.drift = Drift(f * cfg.drift_std, cfg.drift_tau_steps, 3, self.rng)
        self.tremor = Tremor(f * cfg.tremor_std, cfg.tremor_hz, cfg.tremor_band_hz, 3, self.rng)
        self.seen: deque[np.ndarray] = deque(maxlen=cfg.lag_steps + 1)
        self.recent: deque[tuple[np.ndarray, float]] = deque(maxlen=cfg.retry_steps)
        self.hold = self.back_off = 0  # steps still to hold still / to back off
        self.last_hand, self.last_move = np.zeros(3), np.zeros(4)  # `_execute`'s push test
        self.acting = False  # in a segment (False: before the first, or holding, backing off)
        self.closed = False  # the plan's gripper command in the segment
        self.mistake = Mistake(np.zeros(3))

    def start_watching(self) -> None:
        self.plan.start_watching()

    def watch(self, obs: dict[str, Any], info: dict[str, Any]) -> str | None:
        return self.plan.watch(obs, info)

    def take_over(self, reason: str, history: list[dict[str, Any]]) -> int:
        self.hold, self.back_off, self.acting = self.cfg.reaction_steps, 0, False
        self.recent.clear()
        self.last_move = np.zeros(4)
        return self.plan.take_over(reason, history)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        state = np.asarray(obs["state"], dtype=np.float64)
        self.seen.append(state)
        if self.hold > 0:
            self.hold -= 1
            return hold_action(state)
        if self.plan.retreat > 0:  # the takeover's retreat: the plan's open-and-lift
            return self._execute(self.plan.act(obs).astype(np.float64))
        if self.back_off == 0:
            planned = self.plan.act({**obs, "state": self._perceived()}).astype(np.float64)
            self._track_segment(planned[3] > GRIP_CLOSED)
            if not self._blocked(state[:3], planned[:3]):
                return self._execute(self._mistaken(planned))
            self.back_off, self.acting = self.cfg.back_off_steps, False  # give up, retry after
        self.back_off -= 1
        return self._execute(np.array(BACK_OFF))

    def _mistaken(self, planned: np.ndarray) -> np.ndarray:
        """The planned action as the segment's mistake bends it; counts the mistake down."""
        intended = planned.copy()
        m = self.mistake
        intended[:3] *= m.gain
        if m.lift_steps > 0:
            intended[2] += m.lift
            m.lift_steps -= 1
        if m.drop_in == 0:
            intended[3] = -1.0
        else:
            m.drop_in -= 1
        m.steps -= 1
        if m.steps <= 0:  # noticed: correct from here
            self.mistake = Mistake(np.zeros(3))
        return intended

    def _execute(self, intended: np.ndarray) -> np.ndarray:
        """The intended action as the person's hand gives it: no faster than `speed` unless
        pushing, with drift and tremor."""
        hand = self.seen[-1][:3]
        moved = float(np.linalg.norm(hand - self.last_hand)) / STEP_M
        pushing = moved < 0.5 * float(np.linalg.norm(self.last_move[:3]))
        limit = 1.0 if pushing else self.cfg.speed
        move = intended[:3].copy()
        move[:2] = np.clip(move[:2], -limit, limit)
        action = np.append(move + self.drift.sample() + self.tremor.sample(), intended[3])
        action = np.clip(action, -1.0, 1.0)
        self.last_hand = hand
        self.last_move = action
        return action.astype(np.float32)

    def _blocked(self, hand: np.ndarray, move: np.ndarray) -> bool:
        """Whether the hand has been commanded to move and has not, for `retry_steps`."""
        self.recent.append((hand, float(np.linalg.norm(move))))
        if len(self.recent) < self.cfg.retry_steps:
            return False
        moved = float(np.linalg.norm(hand - self.recent[0][0]))
        if np.mean([m for _, m in self.recent]) > BLOCKED_MOVE and moved < BLOCKED_M:
            self.recent.clear()
            return True
        return False

    def _perceived(self) -> np.ndarray:
        """The lagged observation, misjudged by the segment's offset: with the gripper open,
        the hand taken to be `offset` from where it is (the approach misses by as much); with
        it closed, the goal (the last 3 entries of MetaWorld's state), so that a held object
        stays where it is in the hand."""
        state = self.seen[0].copy()
        if self.closed:
            state[-3:] += self.mistake.offset
        else:
            state[0:3] -= self.mistake.offset
            if state.shape[0] >= 21:  # MetaWorld's state repeats the previous frame at 18:36
                state[18:21] -= self.mistake.offset
        return state

    def _track_segment(self, closed: bool) -> None:
        if self.acting and closed == self.closed:
            return
        grasp = self.acting and closed
        self.acting = True
        self.closed = closed
        self.mistake = self._draw_mistake(grasp)

    def _draw_mistake(self, grasp: bool) -> Mistake:
        """A new segment starts: which mistakes it carries (the draws are the same whichever
        happen, so one mistake's probability leaves the others' randomness unchanged)."""
        cfg = self.cfg
        f = self.clumsiness
        u = self.rng.random(4)
        xy = self.rng.standard_normal(2)
        steps = int(self.rng.integers(cfg.notice_steps // 2, cfg.notice_steps * 3 // 2 + 1))
        drop_in = int(self.rng.integers(0, cfg.notice_steps))
        offset = np.zeros(3)
        if u[0] < min(1.0, cfg.wrong_approach_prob * f):
            offset[:2] = cfg.approach_offset_m * xy
        gain = cfg.overshoot_gain if u[2] < min(1.0, cfg.overshoot_prob * f) else 1.0
        mistake = Mistake(offset, gain, max(1, steps))
        if grasp and u[1] < min(1.0, cfg.grasp_slip_prob * f):
            mistake.lift = cfg.grasp_lift_m / (STEP_M * SLIP_STEPS)
            mistake.lift_steps = SLIP_STEPS
        if grasp and u[3] < min(1.0, cfg.drop_prob * f):
            mistake.drop_in = SLIP_STEPS + drop_in  # after the fingers have closed
            mistake.steps = max(mistake.steps, mistake.drop_in + SLIP_STEPS)  # fingers open
        return mistake


BACK_OFF = (0.0, 0.0, 1.0, -1.0)  # open the gripper and lift


def hold_action(state: np.ndarray) -> np.ndarray:
    """The robot held still while the person reacts: no hand motion, and the gripper kept as
    the fingers are (closed on whatever they hold unless they are fully open)."""
    grip = 1.0 if state[3] < FINGERS_OPEN else -1.0
    return np.array([0.0, 0.0, 0.0, grip], dtype=np.float32)
