"""OGBench manipulation tasks (the `ogbench` extra) as the paper's episodic MDP (Eq. 14).

Each aloe task is one of OGBench's single-goal ("singletask") evaluation tasks, the default
one that qc and the OGBench paper report: `cube-double` (task 2, two cubes to move: several
objects), `scene` (task 2, unlock and close the drawer and the window, then lock both again:
several stages in order) and `puzzle-3x3` (task 4, a lights-out board of nine buttons).

`OGBenchEnv` implements `aloe.envs.base.EpisodeEnv` as MetaWorld's `TaskEnv` does, from the
same `EnvConfig`, and `BACKEND` is OGBench's row of `aloe.envs.registry.BACKENDS`: Eq. 14 rewards (C_fail = the composed operator's mean episode length,
`aloe.envs.ogbench_tasks.OPERATOR_EPISODE_LENGTH`), episodes that end on success, on a labelled failure
(`aloe.envs.ogbench_tasks.OGBenchFailures`) or at the time limit, an exact save/restore, and cameras.

The observation's `state` is [hand xyz (m), gripper openness (1 open .. 0 closed), OGBench's
own state vector]: the hand first, as in MetaWorld's state, so that the human operator profile
reads hand and gripper where it does for MetaWorld. `privileged` carries what the composed
operator reads off the scene (`aloe.operators.composed`): OGBench's info dict plus the goal.
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Any, NamedTuple

import numpy as np

from aloe.envs.base import Backend, Dims, EnvConfig, PresetSizes, SuiteParts, lent
from aloe.envs.cameras import Cameras, LazyImages
from aloe.envs.ogbench_tasks import (
    ACTION_DIM,
    CAMERAS,
    CONTROL_HZ,
    IRRECOVERABLE_DROP,
    IRRECOVERABLE_OFF_TABLE,
    IRRECOVERABLE_REACH,
    OPERATOR_EPISODE_LENGTH,
    TASKS,
    UNDONE,
    WORKSPACE,
    OGBenchFailures,
    lights_out,
)


class Stage(NamedTuple):
    """One part of the goal: a cube at its place, the drawer or window at its position, a
    button in its state."""

    name: str
    met: bool


def make_raw(task: str, image_size: int = 64) -> Any:
    """OGBench's environment for `task` (its default single-task goal), unwrapped."""
    import gymnasium as gym
    import ogbench  # noqa: F401  (the optional ogbench extra; registers the environments)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gym.make(TASKS[task].gym_id, width=image_size, height=image_size).unwrapped


class OGBenchEnv:
    """One OGBench task with Eq. 14 rewards, failure events and exact save/restore."""

    ACTION_DIM = ACTION_DIM

    def __init__(self, cfg: EnvConfig) -> None:
        self.cfg = cfg
        self.task = cfg.task
        self.spec = TASKS[self.task]
        self.instruction = self.spec.instruction
        self.raw = make_raw(self.task, cfg.image_size)
        self.raw.reset(seed=0)  # builds the model
        self.model, self.data = self.raw._model, self.raw._data
        self.cameras = Cameras(self.model, cfg.cameras, cfg.image_size, cfg.fast_render)
        self.failures: OGBenchFailures = cfg.ogbench
        self.judge_undone = self.failures.undone and self.task != "puzzle-3x3"
        self._table = self.model.geom("floor").size[:2].copy()  # the table top's half-extent
        self.c_fail = cfg.c_fail if cfg.c_fail is not None else operator_episode_length(self.task)
        self.control_period = 1.0 / CONTROL_HZ
        self.controller = "policy"
        self.steps = 0
        self.limit = cfg.max_steps
        self._state = np.zeros(self.spec.state_dim)
        self._episode: dict[str, Any] = {}

    # --- the protocol ---------------------------------------------------------------------

    @property
    def max_steps(self) -> int:
        return self.cfg.max_steps

    @property
    def state_dim(self) -> int:
        return self.spec.state_dim

    @property
    def action_dim(self) -> int:
        return ACTION_DIM

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[dict, dict]:
        self.raw.reset(seed=int(seed) if seed is not None else 0)
        # OGBench settles its goal scene with unseeded random actions before the reset: what
        # they leave in the solver's warm start would make the same seed step differently.
        self.data.qacc_warmstart[:] = 0.0
        self._refresh()
        self.steps, self.limit, self.controller = 0, self.cfg.max_steps, "policy"
        stages = self.stages()
        self._episode = {
            "completed": [False] * len(stages),
            "met": [s.met for s in stages],
            "lifted": [False] * self._num_cubes(),
            "best": -np.inf,
            "idle": 0,
        }
        obs = self._obs()
        return obs, {"success": False, "failure_reason": ""}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self.raw.step(action)
        self._refresh()
        self.steps += 1
        success = bool(self.raw._success)
        progress = self.progress()
        reason = "" if success else self._failure(progress)
        if not success and not reason and self.steps >= self.limit:
            reason = "timeout" if self.cfg.timeout_is_failure else ""
        truncated = not success and not reason and self.steps >= self.limit
        reward = self.reward(success=success, failed=bool(reason))
        info = {"success": success, "failure_reason": reason, "progress": progress}
        return self._obs(), reward, success or bool(reason), truncated, info

    def reward(self, *, success: bool, failed: bool) -> float:
        """Eq. 14: 0 at a successful end, −C_fail at a failed end, −1 otherwise."""
        if success:
            return 0.0
        return -float(self.c_fail) if failed else -1.0

    def reset_progress(self) -> None:
        self._episode["best"], self._episode["idle"] = -np.inf, 0

    def hand_to(self, actor: str) -> None:
        if actor not in ("policy", "operator"):
            raise ValueError(f"actor {actor!r}: must be 'policy' or 'operator'")
        if actor == "policy":  # stages already undone are the operator's to mend, not events
            self._episode["met"] = [s.met for s in self.stages()]
        self.controller = actor

    def close(self) -> None:
        self.cameras.close()

    # --- exact save / restore -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        attrs = {k: copy.deepcopy(v) for k, v in vars(self.raw).items() if k in _RAW_ATTRS}
        return {
            "mj_state": self.sim_state(),
            "attrs": attrs,
            "steps": self.steps,
            "state": self._state.copy(),
            "episode": copy.deepcopy(self._episode),
        }

    def restore(self, snap: dict[str, Any]) -> dict[str, Any]:
        import mujoco  # late: see _mj_state

        for k, v in snap["attrs"].items():
            setattr(self.raw, k, copy.deepcopy(v))
        if hasattr(self.raw, "_apply_button_states"):  # the locks live in the model (damping)
            self.raw._apply_button_states()
        mujoco.mj_setState(self.model, self.data, snap["mj_state"], _mj_state())
        self._refresh()
        self.steps = snap["steps"]
        self._episode = copy.deepcopy(snap["episode"])
        return self._obs()

    def sim_state(self) -> np.ndarray:
        import mujoco  # late: see _mj_state

        mj = np.empty(mujoco.mj_stateSize(self.model, _mj_state()))
        mujoco.mj_getState(self.model, self.data, mj, _mj_state())
        return mj

    @property
    def sim_state_dim(self) -> int:
        import mujoco  # late: see _mj_state

        return int(mujoco.mj_stateSize(self.model, _mj_state()))

    def progress_state(self) -> np.ndarray:
        return self._state

    # --- the task -------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        """The goal's parts and whether each is met now."""
        raw = self.raw
        d = self.data
        stages = [Stage(f"cube {i}", bool(ok)) for i, ok in enumerate(self._cube_met())]
        if hasattr(raw, "_target_drawer_pos"):
            drawer = abs(d.joint("drawer_slide").qpos[0] - raw._target_drawer_pos) <= 0.04
            window = abs(d.joint("window_slide").qpos[0] - raw._target_window_pos) <= 0.04
            stages += [Stage("drawer", bool(drawer)), Stage("window", bool(window))]
        if hasattr(raw, "_cur_button_states"):
            same = raw._cur_button_states == raw._target_button_states
            stages += [Stage(f"button {i}", bool(ok)) for i, ok in enumerate(same)]
        return stages

    def progress(self) -> float:
        """The dense signal the stall detector and the operator's watch read: minus the
        subtasks still to do (which falls by one with each one done, also where doing one
        undoes a met stage: unlocking, a lights-out press), plus for each cube and each
        unlocked drawer or window how far it has come towards its goal (0..0.5)."""
        dist = self._cube_goal_distances()
        todo = sum(d > 0.04 for d in dist)
        shaped = sum(0.5 * (1.0 - min(1.0, d / 0.3)) for d in dist)
        info = self._privileged()
        if self.task == "puzzle-3x3":
            todo += int(
                lights_out(info["button_states"], info["goal/button_states"], *info["board"]).sum()
            )
        elif self.task == "scene":
            for part, button in (("drawer", 0), ("window", 1)):
                now = info["button_states"][button]
                want = info["goal/button_states"][button]
                gap = abs(float(info[f"privileged/{part}_pos"][0]) - info[f"goal/{part}_pos"])
                if gap <= 0.04:
                    todo += int(now != want)
                    continue
                todo += 1 + int(now == 0) + int(want == 0)  # (unlock,) slide, (lock again)
                shaped += 0.5 * (1.0 - min(1.0, gap / 0.2)) if now == 1 else 0.0
        return float(shaped - todo)

    def _failure(self, progress: float) -> str:
        f = self.failures
        ep = self._episode
        for i, (pos, dist) in enumerate(
            zip(self._cube_positions(), self._cube_goal_distances(), strict=True)
        ):
            if f.off_table and (pos[2] < f.table_z or np.any(np.abs(pos[:2]) > self._table)):
                return f"{IRRECOVERABLE_OFF_TABLE} (cube {i})"
            low = WORKSPACE[0] - f.reach_margin
            high = WORKSPACE[1] + f.reach_margin
            if f.out_of_reach and not (np.all(low <= pos[:2]) and np.all(pos[:2] <= high)):
                return f"{IRRECOVERABLE_REACH} (cube {i})"
            if pos[2] > 0.02 + f.lift_height:
                ep["lifted"][i] = True
            elif ep["lifted"][i] and pos[2] < 0.03 and dist > f.drop_goal_distance:
                hand = self.data.site_xpos[self.raw._pinch_site_id]
                if np.linalg.norm(hand - pos) > 0.05:
                    ep["lifted"][i] = False
                    if f.drop:
                        return f"{IRRECOVERABLE_DROP} (cube {i})"
        for k, s in enumerate(self.stages()):
            if s.met and not ep["met"][k]:
                ep["completed"][k] = True  # met now, and not at the last step: done here
            elif not s.met and ep["met"][k]:
                if not self._off_goal(s):
                    continue  # a cube jittering just off its place: not yet undone
                if ep["completed"][k] and self.judge_undone and self.controller == "policy":
                    return f"{UNDONE}: {s.name} is no longer at its goal"
            ep["met"][k] = s.met
        stall = self.cfg.failures.stall_steps
        if progress > ep["best"] + self.cfg.failures.stall_min_gain:
            ep["best"], ep["idle"] = progress, 0
        else:
            ep["idle"] += 1
        if stall and ep["idle"] >= stall:
            return f"stall: no task progress for {stall} steps"
        return ""

    def _off_goal(self, stage: Stage) -> bool:
        """A cube counts as moved off its goal beyond `undo_distance` (placing jitters)."""
        if not stage.name.startswith("cube"):
            return True
        i = int(stage.name.split()[1])
        return bool(self._cube_goal_distances()[i] > self.failures.undo_distance)

    # --- OGBench's simulator --------------------------------------------------------------

    def _refresh(self) -> None:
        """Make every derived quantity (site poses, contact forces) a function of the
        integration state alone, then put that state back: OGBench reads the hand's pose
        from what its last substep left, which a restored state would not have, and a forward
        pass changes the solver's warm start."""
        import mujoco  # late: see _mj_state

        state = self.sim_state()
        mujoco.mj_forward(self.model, self.data)
        mujoco.mj_rnePostConstraint(self.model, self.data)
        mujoco.mj_setState(self.model, self.data, state, _mj_state())
        info = self.raw.compute_ob_info()
        hand = info["proprio/effector_pos"]
        openness = 1.0 - float(info["proprio/gripper_opening"][0])
        self._info = info
        self._state = np.concatenate([hand, [openness], self.raw.compute_observation()])

    def _obs(self) -> dict[str, Any]:
        obs: dict[str, Any] = {
            "state": self._state.astype(np.float32),
            "instruction": self.instruction,
            "privileged": self._privileged(),
        }
        if self.cfg.cameras:
            obs["images"] = LazyImages(self.cameras, self.data)
        return obs

    def _privileged(self) -> dict[str, Any]:
        """OGBench's info dict plus the goal, for the composed operator."""
        raw = self.raw
        d = self.data
        info = dict(self._info)
        for i, mocap in enumerate(getattr(raw, "_cube_target_mocap_ids", [])):
            info[f"goal/block_{i}_pos"] = d.mocap_pos[mocap].copy()
        if hasattr(raw, "_button_site_ids"):
            info["button_top_pos"] = [d.site_xpos[s].copy() for s in raw._button_site_ids]
            info["button_states"] = raw._cur_button_states.copy()
            info["goal/button_states"] = raw._target_button_states.copy()
        if hasattr(raw, "_target_drawer_pos"):
            info["goal/drawer_pos"] = float(raw._target_drawer_pos)
            info["goal/window_pos"] = float(raw._target_window_pos)
            info["goal/drawer_handle_pos"] = d.site_xpos[raw._drawer_target_site_id].copy()
            info["goal/window_handle_pos"] = d.site_xpos[raw._window_target_site_id].copy()
        if hasattr(raw, "_num_cols"):
            info["board"] = (raw._num_rows, raw._num_cols)
        return info

    def _num_cubes(self) -> int:
        return int(getattr(self.raw, "_num_cubes", 0)) if self.task != "puzzle-3x3" else 0

    def _cube_positions(self) -> list[np.ndarray]:
        return [self.data.joint(f"object_joint_{i}").qpos[:3] for i in range(self._num_cubes())]

    def _cube_goal_distances(self) -> list[float]:
        mocap = getattr(self.raw, "_cube_target_mocap_ids", [])
        return [
            float(np.linalg.norm(p - self.data.mocap_pos[m]))
            for p, m in zip(self._cube_positions(), mocap, strict=False)
        ]

    def _cube_met(self) -> list[bool]:
        return [d <= 0.04 for d in self._cube_goal_distances()]


# OGBench's Python-side episode state (MuJoCo's integration state holds the rest).
_RAW_ATTRS = {
    "_cur_button_states",
    "_prev_button_states",
    "_target_button_states",
    "_success",
    "_prev_qpos",
    "_prev_qvel",
    "_prev_ob_info",
    "_reset_next_step",
    "_target_drawer_pos",
    "_target_window_pos",
}


def _mj_state() -> Any:
    """MuJoCo's integration state (imported late: `aloe.envs.tasks` imports this module, and
    the CLI must start without loading MuJoCo)."""
    import mujoco

    return mujoco.mjtState.mjSTATE_INTEGRATION


@functools.cache
def operator_episode_length(task: str, episodes: int = 10) -> float:
    """Mean length of the composed operator's noise-free successful episodes: the default
    C_fail of Eq. 14 (as MetaWorld's expert episodes give it), from the table when measured."""
    known = OPERATOR_EPISODE_LENGTH.get(task)
    if known is not None:
        return known
    lengths = [n for ok, n in operator_episodes(task, range(episodes)) if ok]
    if not lengths:
        raise RuntimeError(f"the composed operator never solved {task}; set c_fail explicitly")
    return float(np.mean(lengths))


def operator_episodes(
    task: str, seeds: Any, max_steps: int | None = None
) -> list[tuple[bool, int]]:
    """(success, steps) of the noise-free composed operator from each seed's reset: runs of
    the rollout engine with no policy, the operator acting from the start."""
    composed, config, play_episode = (
        lent(n) for n in ("ComposedOperator", "OperatorConfig", "play_episode")
    )
    limit = max_steps or 2 * TASKS[task].max_steps
    env = OGBenchEnv(EnvConfig(task=task, max_steps=limit, c_fail=1.0))
    out = []
    for seed in seeds:
        operator = composed(task, config(noise_std=0.0), seed=seed)
        run = play_episode(env, seed, policy=None, operator=operator)
        out.append((run.success, run.steps))
    return out


def preset_sizes(task: str) -> PresetSizes:
    """An OGBench task on 2 cores (episodes of 100-500 steps at 20 Hz): OGBench's own time
    limit, the operator's correction as long, patience and the stall detector in seconds as
    on MetaWorld (5 s, 15 s), the paper's execution chunk 5 for a long-horizon task, and 10
    evaluation episodes in the default preset (10 x 500 steps)."""
    spec = TASKS[task]
    return PresetSizes(
        max_steps=spec.max_steps,
        exec_horizon=5 if spec.long_horizon else None,
        camera=CAMERAS[0],
        patience=100,
        stall_steps=300,
        eval_episodes=10,
    )


def _composed(task: str, cfg: Any, seed: int) -> Any:
    """The operator of OGBench's tasks: its oracles chained by a planner."""
    return lent("make_composed")(task, cfg, seed)


BACKEND = Backend(
    name="ogbench",
    tasks={name: spec.instruction for name, spec in TASKS.items()},
    make_env=OGBenchEnv,
    dims=lambda task, cfg: Dims(TASKS[task].state_dim, ACTION_DIM),
    cameras=CAMERAS,
    operator_episode_length=operator_episode_length,
    make_operator=_composed,
    requires="ogbench",
    install="pip install 'aloe[ogbench]'",
    presets=preset_sizes,
    validate=lambda cfg, prefix: cfg.ogbench.validate(prefix),
    suite=SuiteParts(restore="replay"),
)
