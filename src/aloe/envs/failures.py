"""Failure detectors in the paper's spirit (Section V-A: early termination on irrecoverable
states; Appendix D: action-level failure events).

Each detector looks at the 39-dim MetaWorld state (hand xyz, gripper opening, first object
xyz+quat, ..., the previous frame, goal xyz) and MetaWorld's dense task reward as a progress
signal, and returns a reason string when the episode has failed. They are stateful per
episode: call `reset` first.

Two kinds:
- state checks, always on (`irrecoverable`, the stall fallback): whoever is in control;
- action-level events (`FailureConfig.action_level`), read off MuJoCo's contacts by a
  `ContactProbe`: empty grasp, object knocked away, release in the air, a grasped object
  falling, the hand hitting the table, an excessive contact force. They judge the policy's
  actions only: the caller passes the events to judge (none while an operator controls, as a
  person fumbling a grasp retries), but the detector tracks grasp and rest state every step.

The probe holds the MuJoCo handles; the detector's own attributes are plain data, so that
`copy.deepcopy(vars(detector))` is its exact snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import mujoco
import numpy as np

from aloe.errors import require

HAND = slice(0, 3)
GRIP = 3  # gripper opening, 0 (closed) .. 1 (open): finger distance / 0.1 m, clipped
OBJ = slice(4, 7)
PREV_OBJ = slice(22, 25)  # the first object's position in the previous frame
GOAL = slice(36, 39)

# The action-level events, by their switches in FailureConfig, and their reasons' prefixes.
EVENTS = ("empty_grasp", "knocked_away", "release_in_air", "drop", "table_hit", "contact_force")
EVENT_PREFIXES = (
    "empty grasp",
    "object knocked away",
    "released in the air",
    "grasped object fell",
    "hand hit the table",
    "excessive contact force",
)
"""Every action-level failure reason starts with one of these (in the order of `EVENTS`).
None starts like `aloe.operators.scripted.IRRECOVERABLE`: the operator restarts from the
event's state, it does not rewind."""
OBJECT_EVENTS = frozenset(EVENTS[:4])  # need a free object to grasp

# Events that cannot apply to a task, found with its scripted expert (σ = 0.1, 30 seeds).
# A task not listed whose model has no free-jointed object gets OBJECT_EVENTS and
# contact_force off (its "objects" are fixtures: handles, buttons, drawers that the hand
# must push hard).
_FIXTURE = OBJECT_EVENTS | {"contact_force"}
TASK_EVENTS_OFF: dict[str, frozenset[str]] = {
    # the puck is a bystander: the task is to move the hand, not the object
    "reach-v3": OBJECT_EVENTS,
    # no free object; the expert closes its gripper on nothing and pushes fixtures
    # with 100-800 N (MuJoCo's stiff contacts against the mocap weld)
    "door-open-v3": _FIXTURE,
    "drawer-open-v3": _FIXTURE,
    "drawer-close-v3": _FIXTURE,
    "button-press-topdown-v3": _FIXTURE,
    "window-open-v3": _FIXTURE,
    "window-close-v3": _FIXTURE,
}


@dataclass
class FailureConfig:
    """Thresholds of the failure detectors (metres; N; steps at 80 Hz)."""

    irrecoverable: bool = True
    """Detect irrecoverable states: object off the table, out of the workspace, dropped far."""
    table_z: float = -0.05
    """The object below this height has fallen off the table (the table top is at z = 0)."""
    workspace_x: tuple[float, float] = (-0.6, 0.6)
    """Allowed x range of the object."""
    workspace_y: tuple[float, float] = (0.25, 1.05)
    """Allowed y range of the object."""
    lift_height: float = 0.05
    """An object raised this far above its start height counts as lifted."""
    drop_goal_distance: float = 0.15
    """A lifted object back on the table farther than this from the goal has been dropped."""
    stall_steps: int = 200
    """Fail after this many steps without task progress; 0 disables the stall detector."""
    stall_min_gain: float = 0.05
    """Progress (MetaWorld's dense reward, 0..10) must beat its best by this much to count."""

    action_level: bool = True
    """Action-level failure events (Appendix D), judged on the policy's steps only: every
    event below whose own switch is on, where the task allows it (`TASK_EVENTS_OFF`)."""
    empty_grasp: bool = True
    """Event: the gripper closes with neither finger on the object."""
    closed_opening: float = 0.32
    """The gripper counts as closed below this opening (0..1; empty and fully closed it
    reads 0.26-0.27, closed on peg-insert's peg 0.29, on the pick-place puck 0.38)."""
    empty_steps: int = 3
    """...for this many steps in a row without a finger on the object: an empty grasp."""
    knocked_away: bool = True
    """Event: the object moves away from where it rested without being grasped."""
    knock_distance: float = 0.05
    """Horizontal distance from the object's last rest (or grasp) position that counts."""
    rest_speed: float = 0.001
    """The object rests while it moves less than this per step (8 cm/s) with no hand contact."""
    release_in_air: bool = True
    """Event: the gripper opens and lets a held object go in the air, away from the goal."""
    drop: bool = True
    """Event: a held object slips out of the closed gripper in the air, away from the goal."""
    air_height: float = 0.03
    """An object higher than this above its start height is in the air."""
    release_goal_distance: float = 0.1
    """A release or slip within this distance of the goal is a placement, not a failure."""
    release_steps: int = 3
    """Steps in a row without both fingers on the object that end a grasp (contacts flicker)."""
    open_margin: float = 0.02
    """A grasp is lost to a release when, release_steps later, the gripper is this much more
    open than while it held the object (it opens by ~0.03 a step); otherwise to a slip (the
    fingers close on the gap)."""
    table_hit: bool = True
    """Event: the hand or fingers press on the table."""
    table_force: float = 1.0
    """Normal force (N) on the table above which a hand contact is a hit (the expert never
    touches the table; fingers pushed onto it by the mocap reach 5-7 N)."""
    contact_force: bool = True
    """Event: the hand presses on a fixture (not the object, not the table) too hard."""
    max_contact_force: float = 50.0
    """Normal force (N) on a fixture above which the contact is excessive."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `env.failures.stall_steps
        (-1): must be >= 0 ...`; `prefix` leads the name ("config field " for a run's config)."""
        low = self.workspace_x
        high = self.workspace_y
        positive = "must be a finite number > 0"
        at_least_0 = "must be a finite number >= 0"
        checks: list[tuple[str, bool, str]] = [
            ("table_z", math.isfinite(self.table_z), "must be a finite number"),
            ("workspace_x", low[0] < low[1], "must be (low, high) with low < high"),
            ("workspace_y", high[0] < high[1], "must be (low, high) with low < high"),
            ("lift_height", 0 < self.lift_height < math.inf, positive),
            ("drop_goal_distance", 0 <= self.drop_goal_distance < math.inf, at_least_0),
            ("stall_steps", self.stall_steps >= 0, "must be >= 0 (0 disables the stall detector)"),
            ("stall_min_gain", 0 <= self.stall_min_gain < math.inf, at_least_0),
            (
                "closed_opening",
                0 < self.closed_opening < 1,
                "must be a gripper opening between 0 and 1 (exclusive)",
            ),
            ("empty_steps", self.empty_steps >= 1, "must be >= 1"),
            ("knock_distance", 0 < self.knock_distance < math.inf, positive),
            ("rest_speed", 0 < self.rest_speed < math.inf, positive),
            ("air_height", 0 <= self.air_height < math.inf, at_least_0),
            ("release_goal_distance", 0 <= self.release_goal_distance < math.inf, at_least_0),
            ("release_steps", self.release_steps >= 1, "must be >= 1"),
            (
                "open_margin",
                0 <= self.open_margin < 1,
                "must be a number >= 0 and < 1 (a gripper opening)",
            ),
            (
                "table_force",
                0 <= self.table_force < math.inf,
                "must be a finite number of newtons >= 0",
            ),
            (
                "max_contact_force",
                0 < self.max_contact_force < math.inf,
                "must be a finite number of newtons > 0",
            ),
        ]
        for name, ok, allowed in checks:
            require(ok, f"{prefix}env.failures.{name}", getattr(self, name), allowed)

    def events(self, task: str, has_object: bool) -> frozenset[str]:
        """The events judged on `task` (empty unless `action_level`)."""
        if not self.action_level:
            return frozenset()
        on = {e for e in EVENTS if getattr(self, e)}
        off = TASK_EVENTS_OFF.get(task, frozenset() if has_object else _FIXTURE)
        return frozenset(on - off)


class Contacts(NamedTuple):
    """What the hand touches after a step."""

    left: bool  # a left-finger geom touches the object
    right: bool  # a right-finger geom touches the object
    touch: bool  # any hand geom touches the object
    table_force: float  # largest normal force (N) between a hand geom and the table; 0: none
    fixture_force: float  # largest normal force (N) between a hand geom and anything else
    fixture: str  # the geom that force is on ("" if none)


NO_CONTACT = Contacts(False, False, False, 0.0, 0.0, "")
_OTHER, _TABLE, _OBJECT, _HAND, _LEFT, _RIGHT = range(6)


class ContactProbe:
    """Reads `Contacts` from one MetaWorld model's `data.contact`: one pass over the step's
    contacts with the geoms' classes cached; the normal force is computed only for the
    hand's table and fixture contacts, which a normal grasp has none of.

    Geoms are classed once, by body: the table (`tablelink`), the hand (the `right_hand`
    subtree), its left and right fingers (`leftclaw`, `rightclaw` subtrees, with the pads),
    the object (the subtree of the first free-jointed body), and everything else.
    """

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        self.model = model
        self.data = data
        body = model.geom_bodyid
        cls = np.full(model.ngeom, _OTHER, dtype=np.int8)
        free = [
            model.jnt_bodyid[j]
            for j in range(model.njnt)
            if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE
        ]
        self.has_object = bool(free)
        for code, root in [
            (_TABLE, _body(model, "tablelink")),
            (_HAND, _body(model, "right_hand")),
            (_LEFT, _body(model, "leftclaw")),
            (_RIGHT, _body(model, "rightclaw")),
            (_OBJECT, free[0] if free else -1),
        ]:
            if root >= 0:
                cls[np.isin(body, _subtree(model, root))] = code
        self.cls = cls
        self._cls: list[int] = cls.tolist()  # indexing a list beats numpy on one element
        self.names = [_geom_name(model, g) for g in range(model.ngeom)]
        self._force = np.zeros(6)

    def read(self) -> Contacts:
        n = self.data.ncon
        if n == 0:
            return NO_CONTACT
        # One scan in Python over the (n, 2) geom pairs: a step has a handful of contacts,
        # and each numpy call on arrays that small would cost more than the whole scan.
        cls = self._cls
        left = right = touch = False
        table: list[int] = []
        fixtures: list[int] = []
        for i, (g1, g2) in enumerate(self.data.contact.geom.tolist()):
            a = cls[g1]
            b = cls[g2]
            if (a >= _HAND) == (b >= _HAND):
                continue  # not the hand, or the hand against itself
            mine, other = (a, b) if a >= _HAND else (b, a)
            if other == _OBJECT:
                touch, left, right = True, left or mine == _LEFT, right or mine == _RIGHT
            elif other == _TABLE:
                table.append(i)
            else:
                fixtures.append(i)
        fixture_force = 0.0
        fixture = ""
        if fixtures:
            fixture_force, i = max((self._normal(i), i) for i in fixtures)
            g1, g2 = self.data.contact.geom[i]
            fixture = self.names[g2 if self.cls[g1] >= _HAND else g1]
        table_force = max((self._normal(i) for i in table), default=0.0)
        return Contacts(left, right, touch, table_force, fixture_force, fixture)

    def _normal(self, i: int) -> float:
        mujoco.mj_contactForce(self.model, self.data, int(i), self._force)
        return float(self._force[0])


def _body(model: mujoco.MjModel, name: str) -> int:
    return int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name))


def _geom_name(model: mujoco.MjModel, geom: int) -> str:
    """The geom's name, or its nearest named body's (most MetaWorld geoms are unnamed)."""
    name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, geom)
    body = int(model.geom_bodyid[geom])
    while not name and body > 0:
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, body)
        body = int(model.body_parentid[body])
    return name or f"geom {geom}"


def _subtree(model: mujoco.MjModel, root: int) -> list[int]:
    parent = model.body_parentid
    inside = [root]
    for b in range(root + 1, model.nbody):  # MuJoCo numbers a body after its parent
        if parent[b] in inside:
            inside.append(b)
    return inside


class FailureDetector:
    def __init__(self, cfg: FailureConfig) -> None:
        self.cfg = cfg
        self.reset(np.zeros(39))

    def reset(self, state: np.ndarray) -> None:
        self.start_z = float(state[OBJ][2])
        self.lifted = False
        self.reset_progress()
        # action-level tracking (plain data: part of the snapshot)
        self.anchor = (float(state[4]), float(state[5]))  # the object's last rest/grasp xy
        self.held = False  # both fingers on the object (until release_steps without)
        self.lost_steps = 0  # steps in a row without both fingers, while held
        self.grasp_opening = 1.0  # the gripper's opening while it last held the object
        self.lost_at: tuple[float, ...] = (0.0, 0.0, 0.0)  # object xyz at the grasp's loss
        self.empty_closed = 0  # steps in a row closed with no finger on the object
        self.closed = float(state[GRIP]) < self.cfg.closed_opening  # an empty grasp fired

    def reset_progress(self) -> None:
        """A new actor takes over: judge stalls from here, not from the previous actor's best."""
        self.best_progress = -np.inf
        self.steps_since_progress = 0

    def start_judging(self, state: np.ndarray) -> None:
        """The policy takes control at `state`: its events count from here (the object's
        rest position is where it is now; a gripper already closed is no new grasp)."""
        self.anchor = (float(state[4]), float(state[5]))
        self.empty_closed = 0
        self.closed = float(state[GRIP]) < self.cfg.closed_opening

    def __call__(
        self,
        state: np.ndarray,
        progress: float,
        contacts: Contacts | None = None,
        judge: frozenset[str] = frozenset(),
    ) -> str | None:
        """Return why the episode failed at `state`, or None. `contacts` (None: no events
        tracked) feeds the action-level events; only those in `judge` may fire."""
        if progress > self.best_progress + self.cfg.stall_min_gain:
            self.best_progress = progress
            self.steps_since_progress = 0
        else:
            self.steps_since_progress += 1
        if self.cfg.irrecoverable:
            reason = self._irrecoverable(state)
            if reason:
                return reason
        if contacts is not None:
            reason = self._events(state, contacts, judge)
            if reason:
                return reason
        if self.cfg.stall_steps and self.steps_since_progress >= self.cfg.stall_steps:
            return f"stall: no task progress for {self.cfg.stall_steps} steps"
        return None

    def _irrecoverable(self, state: np.ndarray) -> str | None:
        cfg = self.cfg
        obj = state[OBJ]
        goal = state[GOAL]
        hand = state[HAND]
        if obj[2] < cfg.table_z:
            return "object fell off the table"
        if not (cfg.workspace_x[0] <= obj[0] <= cfg.workspace_x[1]) or not (
            cfg.workspace_y[0] <= obj[1] <= cfg.workspace_y[1]
        ):
            return "object left the workspace"
        if obj[2] > self.start_z + cfg.lift_height:
            self.lifted = True
        elif (
            self.lifted
            and obj[2] < self.start_z + 0.01
            and np.linalg.norm(obj - goal) > cfg.drop_goal_distance
            and np.linalg.norm(hand - obj) > 0.05
        ):
            return "object dropped far from the goal"
        return None

    # --- action-level events ----------------------------------------------------------------
    # Plain floats and tuples: a few numpy calls on 3-vectors would cost more than the step's
    # contact scan.

    def _events(self, state: np.ndarray, c: Contacts, judge: frozenset[str]) -> str | None:
        """Update the grasp and rest tracking from this step, then the first event in
        `judge` that happened (every tracker runs, whichever fires)."""
        s = state.tolist()
        found = [
            self._grasp_lost(s, c),
            self._empty_grasp(s, c),
            self._knocked(s, c, bool(judge)),
            self._table_hit(c),
            self._contact_force(c),
        ]
        for event, reason in found:
            if event in judge:
                return reason
        return None

    def _grasp_lost(self, s: list[float], c: Contacts) -> tuple[str, str]:
        """A held object let go in the air, away from the goal: released or slipped."""
        cfg = self.cfg
        opening = s[GRIP]
        if c.left and c.right:
            self.held = True
            self.lost_steps = 0
            self.grasp_opening = opening
            return "", ""
        if not self.held:
            return "", ""
        if self.lost_steps == 0:
            self.lost_at = tuple(s[OBJ])
        self.lost_steps += 1
        if self.lost_steps < cfg.release_steps:
            return "", ""
        self.held = False
        height = self.lost_at[2] - self.start_z
        away = math.dist(self.lost_at, s[GOAL])
        if height <= cfg.air_height or away <= cfg.release_goal_distance:
            return "", ""
        where = f"{height * 100:.0f} cm up, {away * 100:.0f} cm from the goal"
        if opening > self.grasp_opening + cfg.open_margin:  # a slip closes the fingers
            return "release_in_air", f"released in the air: the gripper opened {where}"
        return "drop", f"grasped object fell: it slipped from the closed gripper {where}"

    def _empty_grasp(self, s: list[float], c: Contacts) -> tuple[str, str]:
        cfg = self.cfg
        opening = s[GRIP]
        if opening >= cfg.closed_opening:
            self.closed = False
            self.empty_closed = 0
            return "", ""
        self.empty_closed = 0 if (c.left or c.right) else self.empty_closed + 1
        if self.closed or self.empty_closed < cfg.empty_steps:
            return "", ""
        self.closed = True  # once per closing
        away = math.dist(s[HAND], s[OBJ])
        return "empty_grasp", (
            f"empty grasp: the gripper closed (opening {opening:.2f}) with no finger on the "
            f"object, {away * 100:.0f} cm from it"
        )

    def _knocked(self, s: list[float], c: Contacts, judging: bool) -> tuple[str, str]:
        """The object's rest position follows it while grasped, while it rests untouched and
        while nobody's actions are judged; a move beyond knock_distance otherwise is a knock."""
        xy = (s[4], s[5])
        resting = math.dist(s[OBJ], s[PREV_OBJ]) < self.cfg.rest_speed and not c.touch
        if not judging or self.held or (c.left and c.right) or resting:
            self.anchor = xy
            return "", ""
        moved = math.dist(xy, self.anchor)
        if moved <= self.cfg.knock_distance:
            return "", ""
        self.anchor = xy  # once per knock
        return "knocked_away", (
            f"object knocked away: it moved {moved * 100:.0f} cm without being grasped"
        )

    def _table_hit(self, c: Contacts) -> tuple[str, str]:
        if c.table_force <= self.cfg.table_force:
            return "", ""
        return "table_hit", f"hand hit the table: pressed it with {c.table_force:.1f} N"

    def _contact_force(self, c: Contacts) -> tuple[str, str]:
        if c.fixture_force <= self.cfg.max_contact_force:
            return "", ""
        return "contact_force", (
            f"excessive contact force: the hand pressed {c.fixture} with {c.fixture_force:.0f} N"
        )
