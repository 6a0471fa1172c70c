"""A MetaWorld v3 task as the paper's episodic MDP (Section III-A, Eq. 14).

`TaskEnv` wraps one MetaWorld environment and gives: the paper's reward (−1 per step,
0 at a successful end, −C_fail at a failed end), episodes that end on success, on a detected
failure (with a reason) and at the time limit, dict observations, seeded resets and an exact
save/restore of the simulator (MuJoCo's integration state plus the env's own attributes),
and optionally camera images (`EnvConfig.cameras`).
"""

from __future__ import annotations

import copy
import ctypes.util
import functools
import math
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

# MuJoCo picks its GL backend when it is imported, so this must precede `import mujoco`.
# Headless (no display): render on the CPU with OSMesa; a GPU machine sets MUJOCO_GL=egl.
# Only where OSMesa is installed: with MUJOCO_GL=osmesa and no libOSMesa, `import mujoco`
# itself fails, and state-only runs need no renderer.
_GL_LATE = "mujoco" in sys.modules and "MUJOCO_GL" not in os.environ
if not os.environ.get("DISPLAY") and ctypes.util.find_library("OSMesa"):
    os.environ.setdefault("MUJOCO_GL", "osmesa")

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from aloe.envs.failures import ContactProbe, FailureConfig, FailureDetector  # noqa: E402
from aloe.envs.ogbench_tasks import CAMERAS as OGBENCH_CAMERAS  # noqa: E402
from aloe.envs.ogbench_tasks import TASKS as OGBENCH_TASKS  # noqa: E402
from aloe.envs.ogbench_tasks import OGBenchFailures  # noqa: E402
from aloe.envs.tasks import DEFAULT_TASK, INSTRUCTIONS, task_list  # noqa: E402
from aloe.errors import require  # noqa: E402

CONTROL_HZ = 80.0  # MetaWorld: frame_skip 5 × 2.5 ms
_MJ_STATE = mujoco.mjtState.mjSTATE_INTEGRATION
# Env attributes that are plain data (restored on `restore`); MuJoCo handles are not.
_SKIP_ATTRS = {"model", "data", "mujoco_renderer", "np_random", "_np_random"}
MAX_CAMERAS = 3  # the paper's policy sees up to three views
# The cameras of every MetaWorld v3 task's model (all 50 share them; `Cameras` checks the
# model itself), so that a config is checked before any environment is built.
CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
# The corner cameras are defined with their image "up" pointing at the floor (xyaxes with
# y·z < 0), so their raw frames show the table upside down; turning them by 180° (as LeRobot's
# MetaWorld env does for corner2) gives an upright, unmirrored picture.
_UPSIDE_DOWN = {"corner", "corner2", "corner3", "corner4"}
# MetaWorld asks for 4096² shadow maps and 4× multisampling: on a CPU that costs ~4× the
# frame time and changes nothing visible at 32-96 px.
_SHADOW_SIZE = 1024


@dataclass
class EnvConfig:
    """How a MetaWorld task is turned into the paper's episodic task."""

    task: str = DEFAULT_TASK
    """MetaWorld v3 task name (`aloe tasks` lists them), or several: a suite (mt10) or a
    comma-separated list, reset seeds taking them in turn."""
    max_steps: int = 300
    """Time limit of the policy's attempt, in steps (MetaWorld's own limit is 500)."""
    c_fail: float | None = None
    """Eq. 14 failure cost; None = mean length of the task's expert episodes (as the paper)."""
    timeout_is_failure: bool = True
    """The paper labels a time-out a failure (−C_fail, no bootstrap); False = truncation."""
    failures: FailureConfig = field(default_factory=FailureConfig)
    """Failure detectors (MetaWorld; on OGBench tasks the stall detector's fields)."""
    ogbench: OGBenchFailures = field(default_factory=OGBenchFailures)
    """Failure events of the OGBench tasks (`aloe.envs.ogbench_tasks`)."""
    cameras: tuple[str, ...] = ()
    """MetaWorld cameras whose images every observation carries (at most 3, as the paper):
    "corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV".
    Empty = state only."""
    image_size: int = 64
    """Height = width of the camera images, in pixels."""
    fast_render: bool = True
    """Render without shadows, reflections and the skybox: 3.7× cheaper on CPU (18 against
    66 ms per 64 px frame, measured on a loaded 2-core machine); False = MetaWorld's look."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first field out of range, `env.max_steps (0): must be
        >= 1`; `prefix` leads the name ("config field " for a run's config). The task is
        checked by `aloe.envs.tasks.task_list`."""
        f = self.failures
        cameras = OGBENCH_CAMERAS if self.task in OGBENCH_TASKS else CAMERAS
        checks: list[tuple[str, Any, bool, str]] = [
            ("max_steps", self.max_steps, self.max_steps >= 1, "must be >= 1"),
            (
                "c_fail",
                self.c_fail,
                self.c_fail is None or 0 < self.c_fail < math.inf,
                "must be None (the expert's mean episode length) or a finite number > 0",
            ),
            (
                "cameras",
                self.cameras,
                all(c in cameras for c in self.cameras),
                f"must name the task's cameras: {', '.join(cameras)}",
            ),
            (
                "cameras",
                self.cameras,
                len(set(self.cameras)) == len(self.cameras) <= MAX_CAMERAS,
                f"must name at most {MAX_CAMERAS} distinct cameras",
            ),
            ("image_size", self.image_size, self.image_size >= 1, "must be >= 1"),
            ("failures.table_z", f.table_z, math.isfinite(f.table_z), "must be a finite number"),
            (
                "failures.workspace_x",
                f.workspace_x,
                f.workspace_x[0] < f.workspace_x[1],
                "must be (low, high) with low < high",
            ),
            (
                "failures.workspace_y",
                f.workspace_y,
                f.workspace_y[0] < f.workspace_y[1],
                "must be (low, high) with low < high",
            ),
            (
                "failures.lift_height",
                f.lift_height,
                0 < f.lift_height < math.inf,
                "must be a finite number > 0",
            ),
            (
                "failures.drop_goal_distance",
                f.drop_goal_distance,
                0 <= f.drop_goal_distance < math.inf,
                "must be a finite number >= 0",
            ),
            (
                "failures.stall_steps",
                f.stall_steps,
                f.stall_steps >= 0,
                "must be >= 0 (0 disables the stall detector)",
            ),
            (
                "failures.stall_min_gain",
                f.stall_min_gain,
                0 <= f.stall_min_gain < math.inf,
                "must be a finite number >= 0",
            ),
            (
                "failures.closed_opening",
                f.closed_opening,
                0 < f.closed_opening < 1,
                "must be a gripper opening between 0 and 1 (exclusive)",
            ),
            ("failures.empty_steps", f.empty_steps, f.empty_steps >= 1, "must be >= 1"),
            (
                "failures.knock_distance",
                f.knock_distance,
                0 < f.knock_distance < math.inf,
                "must be a finite number > 0",
            ),
            (
                "failures.rest_speed",
                f.rest_speed,
                0 < f.rest_speed < math.inf,
                "must be a finite number > 0",
            ),
            (
                "failures.air_height",
                f.air_height,
                0 <= f.air_height < math.inf,
                "must be a finite number >= 0",
            ),
            (
                "failures.release_goal_distance",
                f.release_goal_distance,
                0 <= f.release_goal_distance < math.inf,
                "must be a finite number >= 0",
            ),
            ("failures.release_steps", f.release_steps, f.release_steps >= 1, "must be >= 1"),
            (
                "failures.open_margin",
                f.open_margin,
                0 <= f.open_margin < 1,
                "must be a number >= 0 and < 1 (a gripper opening)",
            ),
            (
                "failures.table_force",
                f.table_force,
                0 <= f.table_force < math.inf,
                "must be a finite number of newtons >= 0",
            ),
            (
                "failures.max_contact_force",
                f.max_contact_force,
                0 < f.max_contact_force < math.inf,
                "must be a finite number of newtons > 0",
            ),
        ]
        for name, value, ok, allowed in checks:
            require(ok, f"{prefix}env.{name}", value, allowed)
        self.ogbench.validate(prefix)


@functools.cache
def expert_episode_length(task: str, episodes: int = 10) -> float:
    """Mean length of successful noise-free expert episodes: the default C_fail of Eq. 14."""
    from aloe.operators.scripted import expert_policy

    env, expert = _make_raw(task), expert_policy(task)
    lengths = []
    for seed in range(episodes):
        env.seed(seed)
        obs, _ = env.reset()
        for t in range(500):
            obs, _, _, _, info = env.step(expert.get_action(obs))
            if info["success"]:
                lengths.append(t + 1)
                break
    if not lengths:
        raise RuntimeError(f"the scripted expert never solved {task}; set c_fail explicitly")
    return float(np.mean(lengths))


def _make_raw(task: str) -> Any:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

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
        self.tasks = task_list(cfg.task)
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
                raw.model, self.cfg.cameras, self.cfg.image_size, self.cfg.fast_render
            )
            self._envs[task] = (raw, cameras)
            self._probes[task] = ContactProbe(raw.model, raw.data)
        self.task, self.instruction = task, INSTRUCTIONS[task]
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
        obs = {"state": state.astype(np.float32), "instruction": self.instruction}
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


_SLOW_FLAGS = (
    mujoco.mjtRndFlag.mjRND_SHADOW,
    mujoco.mjtRndFlag.mjRND_REFLECTION,
    mujoco.mjtRndFlag.mjRND_SKYBOX,
)


class LazyImages(Mapping[str, np.ndarray]):
    """An observation's camera images, rendered on first access from the simulator state
    captured when the observation was made: evaluation, which reads one observation per
    executed chunk, renders only those; collection, which records every step, renders all."""

    def __init__(self, cameras: Cameras, sim: mujoco.MjData) -> None:
        self._cameras = cameras
        self._state = SimpleNamespace(
            qpos=sim.qpos.copy(),
            qvel=sim.qvel.copy(),
            mocap_pos=sim.mocap_pos.copy(),
            mocap_quat=sim.mocap_quat.copy(),
        )
        self._images: dict[str, np.ndarray] | None = None

    def _rendered(self) -> dict[str, np.ndarray]:
        if self._images is None:
            self._images = self._cameras.render(self._state)
        return self._images

    def __getitem__(self, camera: str) -> np.ndarray:
        if camera not in self._cameras.names:
            raise KeyError(camera)
        return self._rendered()[camera]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cameras.names)

    def __len__(self) -> int:
        return len(self._cameras.names)


class Cameras:
    """Renders the configured cameras at the simulator's current state.

    Rendering reads a private `MjData`: the simulation's qpos, qvel and mocap pose are copied
    in and only the kinematics are recomputed there. The simulation's own data is never touched
    (an mj_forward on it would break the exact save/restore), and an image taken after
    `restore` shows exactly the restored state. The renderer (a GL context) is made on first
    use and released by `close`.

    Cost per frame, one camera ("corner", peg-insert-side), 300 frames, CPU rendering with
    OSMesa/llvmpipe on a loaded 2-core machine: 32 px 33 ms, 64 px 32 ms, 96 px 41 ms (most of
    it the three lights' shadow maps; MetaWorld's own 4096² maps with 4× MSAA: 139, 140 and
    161 ms). A state-only step costs ~1 ms, so cameras dominate collection on a CPU; EGL on a
    GPU (MUJOCO_GL=egl) is far cheaper.
    """

    def __init__(
        self, model: mujoco.MjModel, names: tuple[str, ...], size: int, fast: bool = True
    ) -> None:
        allowed = [model.camera(i).name for i in range(model.ncam)]
        for name in names:
            if name not in allowed:
                raise ValueError(f"unknown camera {name!r}; MetaWorld's cameras are {allowed}")
        if len(names) > MAX_CAMERAS or len(set(names)) != len(names):
            raise ValueError(f"cameras {names}: at most {MAX_CAMERAS} distinct names allowed")
        if size <= 0:
            raise ValueError(f"image_size {size}: must be a positive number of pixels")
        self.model, self.names, self.size, self.fast = model, names, size, fast
        self.data = mujoco.MjData(model)
        self._renderer: mujoco.Renderer | None = None

    def render(self, sim: Any) -> dict[str, np.ndarray]:
        """One uint8 (size, size, 3) image per camera, upright."""
        model, data = self.model, self.data
        data.qpos[:], data.qvel[:] = sim.qpos, sim.qvel
        data.mocap_pos[:], data.mocap_quat[:] = sim.mocap_pos, sim.mocap_quat
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)  # camlight's tracking cameras need the subtree COMs
        mujoco.mj_camlight(model, data)  # camera and light poses
        renderer = self._renderer or self._open()
        images = {}
        for name in self.names:
            renderer.update_scene(data, camera=name)
            if self.fast:
                for flag in _SLOW_FLAGS:
                    renderer.scene.flags[flag] = 0
            image = renderer.render()
            if name in _UPSIDE_DOWN:
                image = np.ascontiguousarray(image[::-1, ::-1])
            images[name] = image
        return images

    def _open(self) -> mujoco.Renderer:
        # The GL context reads these when it is made; they are put back at once, so the
        # model (shared with the simulation) is left as it was.
        quality, buffer = self.model.vis.quality, self.model.vis.global_
        saved = quality.shadowsize, quality.offsamples, buffer.offwidth, buffer.offheight
        quality.shadowsize, quality.offsamples = _SHADOW_SIZE, 0
        buffer.offwidth, buffer.offheight = max(saved[2], self.size), max(saved[3], self.size)
        try:
            self._renderer = mujoco.Renderer(self.model, self.size, self.size)
        except Exception as e:
            raise RuntimeError(
                f"cannot create a MuJoCo renderer ({e}); MUJOCO_GL must name a backend that "
                "works here (osmesa: CPU, after `apt-get install libosmesa6`; egl: GPU) before "
                "mujoco is first imported"
                + (
                    " (mujoco was imported before aloe.envs.metaworld could set it)"
                    if _GL_LATE
                    else ""
                )
            ) from e
        finally:
            quality.shadowsize, quality.offsamples, buffer.offwidth, buffer.offheight = saved
        return self._renderer

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


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


def make_env(cfg: EnvConfig) -> TaskEnv:
    return TaskEnv(cfg)
