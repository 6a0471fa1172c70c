"""MetaWorld v3 (the `metaworld` package): its tasks as the paper's episodic MDP (Section III-A,
Eq. 14), and its row of `aloe.envs.registry.BACKENDS`.

`TaskEnv` wraps one MetaWorld environment and gives: the paper's reward (−1 per step,
0 at a successful end, −C_fail at a failed end), episodes that end on success, on a detected
failure (with a reason, `aloe.envs.failures`) and at the time limit, dict observations,
seeded resets and an exact save/restore of the simulator (MuJoCo's integration state plus
the env's own attributes), a step restored from the store (`restore_stored`), and optionally
camera images (`EnvConfig.cameras`). The operator is MetaWorld's scripted expert
(`aloe.operators.scripted`); the evaluation suite's variants edit the task's object
(`aloe.envs.metaworld_variants`).
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from aloe.envs import metaworld_variants
from aloe.envs.base import (
    MAX_CAMERAS,
    Backend,
    Dims,
    EnvConfig,
    SuiteParts,
    lent,
    task_names,
)
from aloe.envs.cameras import Cameras, LazyImages
from aloe.envs.failures import OBJ, ContactProbe, FailureConfig, FailureDetector

__all__ = ["BACKEND", "CAMERAS", "CONTROL_HZ", "MAX_CAMERAS", "EnvConfig", "TaskEnv"]

CONTROL_HZ = 80.0  # MetaWorld: frame_skip 5 × 2.5 ms
_MJ_STATE = mujoco.mjtState.mjSTATE_INTEGRATION
# Env attributes that are plain data (restored on `restore`); MuJoCo handles are not.
_SKIP_ATTRS = {"model", "data", "mujoco_renderer", "np_random", "_np_random"}
# The cameras of every MetaWorld v3 task's model (all 50 share them; `Cameras` checks the
# model itself), so that a config is checked before any environment is built.
CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
# The corner cameras are defined with their image "up" pointing at the floor (xyaxes with
# y·z < 0), so their raw frames show the table upside down; turning them by 180° (as LeRobot's
# MetaWorld env does for corner2) gives an upright, unmirrored picture.
_UPSIDE_DOWN = frozenset({"corner", "corner2", "corner3", "corner4"})
PREV = slice(18, 36)  # the previous frame in MetaWorld's frame-stacked observation
EXPERT_LIMIT = 500  # MetaWorld's own time limit: the expert's episodes for C_fail

# The tasks aloe runs: those MetaWorld's scripted expert (the simulated operator) solves,
# checked with `aloe tasks --verify` (10 seeded noise-free episodes each).
INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "put the ring on the peg",
    "basketball-v3": "dunk the ball into the basket",
    "bin-picking-v3": "move the cube from one bin to the other",
    "box-close-v3": "put the lid on the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button from the top, behind the wall",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "press the button behind the wall",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "take the ring off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by turning the lock",
    "drawer-close-v3": "close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-close-v3": "turn the faucet off",
    "faucet-open-v3": "turn the faucet on",
    "hammer-v3": "hammer the nail into the wall",
    "hand-insert-v3": "insert the gripper into the hole",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "pick-out-of-hole-v3": "pick the peg out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "plate-slide-back-side-v3": "slide the plate back into the cabinet from the side",
    "plate-slide-back-v3": "slide the plate back into the cabinet",
    "plate-slide-side-v3": "slide the plate into the cabinet from the side",
    "plate-slide-v3": "slide the plate into the cabinet",
    "push-back-v3": "push the puck back to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck to the goal around the wall",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "reach the goal position over the wall",
    "shelf-place-v3": "place the puck on the shelf",
    "soccer-v3": "kick the ball into the goal",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "stick-push-v3": "grasp the stick and push the box with it",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-close-v3": "close the window",
    "window-open-v3": "open the window",
}

# Multi-task suites: one policy and one critic over several tasks, told apart by the
# instruction alone. MT10 as MetaWorld defines it (`metaworld.MT10().train_classes`).
SUITES: dict[str, tuple[str, ...]] = {
    "mt10": (
        "reach-v3",
        "push-v3",
        "pick-place-v3",
        "door-open-v3",
        "drawer-open-v3",
        "drawer-close-v3",
        "button-press-topdown-v3",
        "peg-insert-side-v3",
        "window-open-v3",
        "window-close-v3",
    ),
}


@functools.cache
def expert_episode_length(task: str, episodes: int = 10) -> float:
    """Mean length of the noise-free expert's successful episodes from seeds 0..episodes-1,
    within MetaWorld's own time limit and with no failure detector: Eq. 14's default C_fail.
    Each is a run of the rollout engine with no policy, the expert acting from the start."""
    quiet = FailureConfig(irrecoverable=False, stall_steps=0)
    env = TaskEnv(EnvConfig(task=task, max_steps=EXPERT_LIMIT, c_fail=1.0, failures=quiet))
    expert = lent("ExpertOperator")(task)
    play_episode = lent("play_episode")
    runs = [play_episode(env, seed, policy=None, operator=expert) for seed in range(episodes)]
    lengths = [run.steps for run in runs if run.success]
    if not lengths:
        raise RuntimeError(f"the scripted expert never solved {task}; set c_fail explicitly")
    return float(np.mean(lengths))


def _make_raw(task: str) -> Any:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS  # late: slow to import, MetaWorld tasks only

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = ALL_V3_ENVIRONMENTS[task]()
    env._partially_observable = False  # the goal is part of the state, as the experts need
    env.__dict__.pop("sawyer_observation_space", None)  # cached with the hidden-goal bounds
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True  # resets draw object/goal positions from env.seed(...)
    env._set_task_called = True
    env.max_path_length = 10**9  # the time limit is ours
    return env


class TaskEnv(gym.Env):
    """One MetaWorld task with Eq. 14 rewards, failure detection and exact save/restore.

    Implements `aloe.envs.base.EpisodeEnv`, the rollout engine's side of a task.
    """

    metadata = {"render_modes": []}
    STATE_DIM = 39  # hand xyz, gripper, two objects' xyz+quat, the previous frame, goal xyz
    ACTION_DIM = 4  # end-effector xyz delta, gripper effort

    def __init__(self, cfg: EnvConfig) -> None:
        self.cfg = cfg
        self.tasks = task_names(cfg.task, SUITES)
        self._envs: dict[str, tuple[Any, Cameras]] = {}
        self._probes: dict[str, ContactProbe] = {}  # MuJoCo handles: kept off the detector
        self.controller = "policy"  # who acts (`hand_to`): events judge the policy only
        self.select(self.tasks[0])
        self.detector = FailureDetector(cfg.failures)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        spaces: dict[str, gym.Space[Any]] = {
            "state": gym.spaces.Box(-np.inf, np.inf, (39,), np.float32)
        }
        if cfg.cameras:
            shape = (cfg.image_size, cfg.image_size, 3)
            spaces["images"] = gym.spaces.Dict(
                {name: gym.spaces.Box(0, 255, shape, np.uint8) for name in cfg.cameras}
            )
        self.observation_space = gym.spaces.Dict(spaces)
        self.control_period = 1.0 / CONTROL_HZ
        self.steps = 0
        self.limit = cfg.max_steps  # the operator's correction gets its own limit
        self._state = np.zeros(39)

    def select(self, task: str) -> None:
        """Make `task` (one of `self.tasks`) the current one; each keeps its own simulator.

        A multi-task env (`cfg.task` a suite such as mt10) selects by the reset seed, the
        tasks taken in turn: `tasks[seed % len(tasks)]`.
        """
        if task not in self._envs:
            raw = _make_raw(task)
            cameras = Cameras(
                raw.model, self.cfg.cameras, self.cfg.image_size, self.cfg.fast_render, _UPSIDE_DOWN
            )
            self._envs[task] = (raw, cameras)
            self._probes[task] = ContactProbe(raw.model, raw.data)
        self.task = task
        self.instruction = INSTRUCTIONS[task]
        self.raw, self.cameras = self._envs[task]
        self.probe = self._probes[task]
        self.events = self.cfg.failures.events(task, self.probe.has_object)
        self.c_fail = (
            self.cfg.c_fail if self.cfg.c_fail is not None else expert_episode_length(task)
        )

    @property
    def max_steps(self) -> int:
        return self.cfg.max_steps

    @property
    def state_dim(self) -> int:
        return self.STATE_DIM

    @property
    def action_dim(self) -> int:
        return self.ACTION_DIM

    def _obs(self, state: np.ndarray) -> dict[str, Any]:
        obs = {
            "state": state.astype(np.float32),
            "instruction": self.instruction,
            "privileged": {"state": state},  # full precision, for the scripted expert
        }
        if self.cfg.cameras:
            obs["images"] = LazyImages(self.cameras, self.raw.data)
        return obs

    def close(self) -> None:
        """Release the camera renderers (their GL contexts); the env stays usable."""
        for _, cameras in self._envs.values():
            cameras.close()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        if len(self.tasks) > 1:
            n = int(seed) if seed is not None else int(self.np_random.integers(2**31))
            self.select(self.tasks[n % len(self.tasks)])
        self.raw.seed(int(seed) if seed is not None else int(self.np_random.integers(2**31)))
        state, _ = self.raw.reset()
        self.steps = 0
        self.limit = self.cfg.max_steps
        self._state = state
        self.detector.reset(state)
        self.controller = "policy"
        return self._obs(state), {"success": False, "failure_reason": ""}

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        state, progress, _, _, mw_info = self.raw.step(action)
        self.steps += 1
        self._state = state
        success = bool(mw_info["success"])
        contacts = self.probe.read() if self.events else None
        judge = self.events if self.controller == "policy" else frozenset()
        reason = "" if success else (self.detector(state, float(progress), contacts, judge) or "")
        if not success and not reason and self.steps >= self.limit:
            reason = "timeout" if self.cfg.timeout_is_failure else ""
        truncated = not success and not reason and self.steps >= self.limit
        terminated = success or bool(reason)
        reward = self.reward(success=success, failed=bool(reason))
        info = {"success": success, "failure_reason": reason, "progress": float(progress)}
        return self._obs(state), reward, terminated, truncated, info

    def reset_progress(self) -> None:
        """A new actor takes over: the stall detector judges progress from here."""
        self.detector.reset_progress()

    def hand_to(self, actor: str) -> None:
        """`actor` ("policy" or "operator") acts from the next step on. The action-level
        failure events judge the policy's actions only; under the operator only the state
        checks and the time limit apply. Not part of the snapshot: who acts is not the world's
        state. A reset hands control to the policy."""
        if actor not in ("policy", "operator"):
            raise ValueError(f"actor {actor!r}: must be 'policy' or 'operator'")
        if actor == "policy":
            self.detector.start_judging(self._state)
        self.controller = actor

    def reward(self, *, success: bool, failed: bool) -> float:
        """Eq. 14: 0 at a successful end, −C_fail at a failed end, −1 otherwise."""
        if success:
            return 0.0
        if failed:
            return -float(self.c_fail)
        return -1.0

    # --- exact save / restore -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to put the simulator back exactly here (see `restore`)."""
        mj = np.empty(mujoco.mj_stateSize(self.raw.model, _MJ_STATE))
        mujoco.mj_getState(self.raw.model, self.raw.data, mj, _MJ_STATE)
        attrs = {k: _copied(v) for k, v in vars(self.raw).items() if _plain(k, v)}
        return {
            "mj_state": mj,
            "attrs": attrs,
            "steps": self.steps,
            "state": self._state.copy(),
            "detector": _detector_state(self.detector),
        }

    def restore(self, snap: dict[str, Any]) -> dict[str, Any]:
        """Put the simulator back to `snap` and return the observation there.

        No mj_forward afterwards: stepping from the restored integration state reproduces
        the original trajectory bit for bit, and a forward pass would perturb the warm start.
        """
        mujoco.mj_setState(self.raw.model, self.raw.data, snap["mj_state"], _MJ_STATE)
        for k, v in snap["attrs"].items():
            setattr(self.raw, k, _copied(v))
        self.steps = snap["steps"]
        self._state = snap["state"].copy()
        vars(self.detector).update(_detector_state(snap["detector"]))
        return self._obs(self._state)

    def sim_state(self) -> np.ndarray:
        """The MuJoCo integration state alone (what the store keeps per step)."""
        mj = np.empty(mujoco.mj_stateSize(self.raw.model, _MJ_STATE))
        mujoco.mj_getState(self.raw.model, self.raw.data, mj, _MJ_STATE)
        return mj

    @property
    def sim_state_dim(self) -> int:
        return int(mujoco.mj_stateSize(self.raw.model, _MJ_STATE))

    def progress_state(self) -> np.ndarray:
        return self._state

    # --- a stored step put back (`aloe.evaluation.restore.StoredStateRestorer`) -----------

    def restore_stored(
        self, seed: int, first_action: np.ndarray, sim_state: np.ndarray, state: np.ndarray
    ) -> np.ndarray:
        """Put the simulator where a stored step began, bit-exact; its observation (float32).

        `seed` and `first_action` are the episode's, `sim_state` and `state` the step's
        stored `sim.state` and `observation.state`:

        1. reset with the episode's seed (object and goal placement, MetaWorld's attributes);
        2. take the episode's first action, so that attributes MetaWorld sets lazily at the
           first reward (bin-picking's `_target_to_obj_init`) take their values;
        3. `mj_setState(mjSTATE_INTEGRATION)` with the stored simulator state;
        4. `mj_forward` for the kinematics, the frame stack's previous frame from the stored
           observation, then MetaWorld's observation (which leaves its previous frame at this
           one in float64, as the original step did);
        5. `mj_setState` once more: mj_forward rewrote the solver's warm start.
        """
        sim_state = np.array(sim_state, dtype=np.float64)  # writable: parquet arrays are not
        self.reset(seed=seed)
        self.step(first_action)
        m = self.raw.model
        d = self.raw.data
        mujoco.mj_setState(m, d, sim_state, _MJ_STATE)
        mujoco.mj_forward(m, d)
        self.raw._prev_obs = np.asarray(state[PREV], dtype=np.float64)
        obs = self.raw._get_obs()
        mujoco.mj_setState(m, d, sim_state, _MJ_STATE)
        self._state = obs
        return obs.astype(np.float32)

    def resume_detector(self, first_state: np.ndarray, states: np.ndarray) -> None:
        """The failure detector as collection left it: reset at the episode's first state,
        its "object was lifted" flag read off the stored next states since (it misses a lift
        that a takeover's rewind undid)."""
        self.detector.reset(first_state)
        lift = self.detector.start_z + self.detector.cfg.lift_height
        self.detector.lifted = bool((np.asarray(states)[:, OBJ][:, 2] > lift).any())

    def take_detector(self, other: TaskEnv) -> None:
        """Copy `other`'s failure-detector counters into this env's detector."""
        vars(self.detector).update(copy.deepcopy(vars(other.detector)))


_IMMUTABLE = (int, float, bool, str, type(None), np.generic)


def _copied(value: Any) -> Any:
    """A copy of a plain attribute for a snapshot: arrays copied, immutable scalars shared,
    anything else deep-copied. A policy step takes a snapshot after every step (for the
    rewind), so this is ~5x cheaper than deep-copying each value."""
    if isinstance(value, np.ndarray):
        return value.copy()
    return value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value)


def _detector_state(source: Any) -> dict[str, Any]:
    """The failure detector's mutable state (a dict of its attributes, or the detector):
    every attribute copied except its config, which nothing changes while stepping."""
    items = source if isinstance(source, dict) else vars(source)
    return {k: v if k == "cfg" else _copied(v) for k, v in items.items()}


def _plain(name: str, value: Any) -> bool:
    if name in _SKIP_ATTRS:
        return False
    if isinstance(value, np.ndarray) and value.base is not None:
        return False  # a live view into MuJoCo's data (e.g. init_left_pad): mj_setState restores it
    return isinstance(value, np.ndarray | int | float | bool | str | tuple | list | type(None))


BACKEND = Backend(
    name="metaworld",
    tasks=INSTRUCTIONS,
    make_env=TaskEnv,
    dims=lambda task, cfg: Dims(TaskEnv.STATE_DIM, TaskEnv.ACTION_DIM),
    cameras=CAMERAS,
    operator_episode_length=expert_episode_length,
    make_operator=lambda task, cfg, seed: _scripted(task, cfg, seed),
    suites=SUITES,
    multi_task=True,
    requires="metaworld",
    install="pip install metaworld",
    validate=lambda cfg, prefix: cfg.failures.validate(prefix),
    suite=SuiteParts(
        variants=metaworld_variants.VARIANTS, perturbations=True, q_traces=True, restore="stored"
    ),
)


def _scripted(task: str, cfg: Any, seed: int) -> Any:
    """The operator of MetaWorld's tasks: its scripted expert (`aloe.operators.scripted`)."""
    return lent("make_scripted")(task, cfg, seed)
