"""A LeRobotDataset v3 (or an aloe store) as a run's demonstrations: `aloe train --demos PATH`.

`DemosMap` names which of the dataset's features are the state, the action, the cameras and
the instruction; `Demos.open` reads and checks the dataset (read-only, `aloe.datasets.v3`),
`Demos.plan` checks it against what a run takes (`DemosTarget`: sizes, control rate, chunk
length, cameras, tasks) and `DemosPlan.episodes` turns the episodes it uses into aloe
episodes of source `demo`, ready for the run's store. Every refusal is one `UsageError` line
naming the value and what is allowed, raised before anything is written.

What a dataset episode becomes: its frames' state and action; `next.observation.state` is
the next frame's state (the last frame's own: the episode ends there and is never
bootstrapped past); Eq. 14's rewards of a success (−1 per step, 0 at the last, which is
done and successful); source `demo`, policy version −1, one fragment. Every episode is taken
as a successful demonstration, as `lerobot-record` keeps no outcome; from an aloe store,
only the successful episodes made of `demo` steps alone are used (not its policy or human
fragments). Episodes shorter than the chunk length are left out, with a notice.

A robot run (`DemosTarget.units`) maps the actions from the robot's units into aloe's
[-1, 1] as it imports them (`aloe.envs.robot_spec.ActionUnits`, from `Demos.action_units`:
meta/stats.json's min and max, or the frames' own); any other run takes them as they are.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from aloe import data as D
from aloe.datasets.layout import INFO_PATH
from aloe.datasets.v3 import NUMERIC, V3Dataset, V3Error
from aloe.envs.robot_spec import ActionUnits
from aloe.errors import UsageError, bad, require
from aloe.progress import plural

TASK = "task"  # DemosMap.instruction's LeRobot default: task_index into meta/tasks.parquet
BATCH_FRAMES = 20_000  # frames per store append while importing (one data file each)


@dataclass
class DemosMap:
    """Which features of a `--demos` dataset a run reads; the defaults are LeRobot's names."""

    state: str = "observation.state"
    """The robot state of each frame: a vector of the run's state size."""
    action: str = "action"
    """The action executed at each frame: a vector of the run's action size."""
    cameras: tuple[str, ...] = ()
    """The video features of the run's cameras (`--vision.cameras`, `--obs image` runs), in
    that order; empty: `observation.images.<camera>` for each camera."""
    instruction: str = TASK
    """`task`: each episode's instruction is LeRobot's task string of its first frame (its
    task_index into meta/tasks.parquet); or the name of a string feature of the frames."""

    def validate(self, prefix: str = "") -> None:
        for name in ("state", "action", "instruction"):
            value = getattr(self, name)
            require(bool(value), f"{prefix}demos_map.{name}", value, "must name a feature")
        require(
            all(self.cameras),
            f"{prefix}demos_map.cameras",
            self.cameras,
            "must name video features",
        )


class DemosTarget(NamedTuple):
    """What a run takes of a dataset (built from its config and environment by
    `aloe.run_demos.demos_target`)."""

    task: str  # the run's --task, for messages
    tasks: dict[str, str]  # its tasks' instructions -> task names
    state_dim: int
    action_dim: int
    fps: float  # the environment's control rate
    horizon: int  # the chunk length
    cameras: dict[str, tuple[int, int]]  # the run's cameras -> (height, width)
    units: ActionUnits | None = None  # a robot run's: actions mapped into [-1, 1] on import

    def task_of(self, instruction: str) -> str | None:
        """The run's task an episode of `instruction` demonstrates: a single-task run's own
        for any instruction; in a multi-task run the task of that instruction, or None."""
        if len(self.tasks) == 1:
            return next(iter(self.tasks.values()))
        return self.tasks.get(instruction)


def open_dataset(path: Path, flag: str = "--demos") -> V3Dataset:
    """The dataset at `path` (a LeRobotDataset v3 directory, an aloe store, or a run
    directory: its dataset/), its metadata read and checked (`V3Dataset.open`), read-only;
    UsageError naming `flag`, `path` and what is wrong."""
    path = Path(path)
    hint = "give a LeRobotDataset v3 directory, an aloe store or a run directory"
    require(path.exists(), flag, path, f"does not exist; {hint}")
    require(path.is_dir(), flag, path, f"is a file; {hint}")
    root = path
    if not (path / INFO_PATH).is_file() and (path / "dataset" / INFO_PATH).is_file():
        root = path / "dataset"  # a run directory: its store
    try:
        return V3Dataset.open(root)
    except V3Error as e:
        raise bad(flag, path, str(e)) from None


class Demos:
    """A dataset opened as demonstrations: its metadata, mapped columns and instructions."""

    def __init__(self, path: Path, dataset: V3Dataset, mapping: DemosMap, flag: str) -> None:
        self.path = path  # as the user gave it, for messages
        self.dataset = dataset
        self.mapping = mapping
        self.flag = flag
        names = [mapping.state, mapping.action, self._instruction_column()]
        widths = [self._vector_feature(role) for role in ("state", "action")]
        columns = self._read(names)
        self.state, self.action = (
            self._vectors(name, columns[name], width)
            for name, width in zip(names, widths, strict=False)
        )
        self.instructions = self._instructions(columns[names[2]])
        ends = np.cumsum(dataset.lengths)
        self.bounds = list(zip((ends - dataset.lengths).tolist(), ends.tolist(), strict=True))

    @classmethod
    def open(cls, path: Path, mapping: DemosMap, flag: str = "--demos") -> Demos:
        """The dataset at `path` (`open_dataset`) with `mapping`'s columns read and checked;
        UsageError naming what is wrong."""
        return cls(Path(path), open_dataset(path, flag), mapping, flag)

    def action_units(self) -> tuple[ActionUnits, str]:
        """The map from the action feature's units into aloe's [-1, 1] (a robot run's), and
        where its ranges come from: per action value, meta/stats.json's min and max (LeRobot
        writes them), widened where a frame lies outside them; the frames' own min and max
        where the file has no well-formed entry for the feature."""
        low = self.action.min(0).astype(np.float64)
        high = self.action.max(0).astype(np.float64)
        stats = self.dataset.stats(self.mapping.action)
        try:
            given = [np.asarray(stats[k], np.float64).reshape(-1) for k in ("min", "max")]
        except (KeyError, TypeError, ValueError):
            given = []
        if len(given) < 2 or any(v.shape != low.shape or not np.isfinite(v).all() for v in given):
            return ActionUnits.of(low, high), "its frames: meta/stats.json has no min and max of it"
        widened = ActionUnits.of(np.minimum(low, given[0]), np.maximum(high, given[1]))
        return widened, "meta/stats.json"

    def mapped(self) -> dict[str, str]:
        """What each role reads, for `aloe dataset inspect`."""
        instruction = self.mapping.instruction
        if instruction == TASK:
            instruction = "task (task_index -> meta/tasks.parquet)"
        return {
            "state": self.mapping.state,
            "action": self.mapping.action,
            "instruction": instruction,
        }

    def candidates(self) -> tuple[list[int], str | None]:
        """The episodes a run may use, and a notice on those it may not: every episode of a
        LeRobot dataset; of an aloe store, its successful `demo`-only episodes."""
        everything = list(range(self.dataset.num_episodes))
        if not self.dataset.is_aloe_store:
            return everything, None
        meta = self.dataset.meta
        ok = [
            s and d == n
            for s, d, n in zip(
                meta["success"].to_pylist(),
                meta["demo_steps"].to_pylist(),
                meta["length"].to_pylist(),
                strict=True,
            )
        ]
        use = [e for e in everything if ok[e]]
        left = len(everything) - len(use)
        if not left:
            return use, None
        return use, f"{plural(left, 'episode')} with policy or human steps, or failed, left out"

    def plan(self, target: DemosTarget) -> DemosPlan:
        """Check the dataset against the run (sizes, control rate, cameras, tasks, chunk
        length) and choose its episodes; UsageError on the first misfit."""
        for role, want in (("state", target.state_dim), ("action", target.action_dim)):
            got = self._vector_feature(role)
            require(
                got == want,
                self.flag,
                self.path,
                f"feature {getattr(self.mapping, role)!r} has {got} values per frame; this "
                f"run's {target.task} {role} has {want} (map another feature with "
                f"--demos-map.{role}, or give a dataset of this robot)",
            )
        fps = self.dataset.fps
        require(
            abs(fps - target.fps) <= 1e-6 * target.fps,
            self.flag,
            self.path,
            f"recorded at {fps:g} fps; this run's {target.task} steps at {target.fps:g} Hz "
            "(aloe does not resample: record at the run's control rate)",
        )
        cameras = self._cameras(target)
        use, note = self.candidates()
        for e in use:
            require(
                target.task_of(self.instructions[e]) is not None,
                self.flag,
                self.path,
                f"episode {e}'s instruction {self.instructions[e]!r} is none of this run's "
                f"tasks' ({'; '.join(f'{t}: {i!r}' for i, t in target.tasks.items())})",
            )
        return self._by_length(target, cameras, use, note)

    def _by_length(
        self, target: DemosTarget, cameras: dict[str, str], use: list[int], note: str | None
    ) -> DemosPlan:
        lengths = self.dataset.lengths
        short = [e for e in use if lengths[e] < target.horizon]
        use = [e for e in use if lengths[e] >= target.horizon]
        require(
            bool(use),
            self.flag,
            self.path,
            f"no episode to use: every one is shorter than the chunk length --horizon "
            f"{target.horizon} (the longest has {int(lengths.max())} frames); lower --horizon "
            "or record longer episodes" + (f" ({note})" if note else ""),
        )
        if short:
            listed = ", ".join(map(str, short[:8])) + (", ..." if len(short) > 8 else "")
            skip = (
                f"{plural(len(short), 'episode')} shorter than --horizon {target.horizon} left out"
            )
            note = "; ".join(filter(None, [note, f"{skip} ({listed})"]))
        return DemosPlan(self, target, cameras, use, note)

    def _cameras(self, target: DemosTarget) -> dict[str, str]:
        """The run's cameras -> the video features they read, each checked."""
        given = self.mapping.cameras
        run = list(target.cameras)
        require(
            not given or len(given) == len(run),
            "--demos-map.cameras",
            list(given),
            f"names {len(given)} features; the run reads {len(run)} cameras "
            f"({', '.join(run) or 'none: --obs state'}), one feature each, in that order",
        )
        keys = list(given) or [D.image_key(c) for c in run]
        out = {}
        for camera, key in zip(run, keys, strict=True):
            feature = self._feature("cameras", key)
            h, w = target.cameras[camera]
            require(
                feature.get("dtype") == "video",
                self.flag,
                self.path,
                f"feature {key!r} is {feature.get('dtype')!r}; a camera must be a 'video' "
                "feature (aloe does not read frames stored as images)",
            )
            require(
                list(feature.get("shape") or []) == [h, w, 3],
                self.flag,
                self.path,
                f"feature {key!r} has frames of shape {feature.get('shape')}; this run's "
                f"camera {camera} is {h}x{w} (--vision.image-size; aloe does not resize)",
            )
            try:
                self.dataset.check_camera(key)
            except V3Error as e:
                raise self._bad(str(e)) from None
            out[camera] = key
        return out

    def _vector_feature(self, role: str) -> int:
        """The per-frame size of the state or action feature, checked to be a vector."""
        name = getattr(self.mapping, role)
        feature = self._feature(role, name)
        shape = feature.get("shape")
        ok = isinstance(shape, list | tuple) and len(shape) == 1 and isinstance(shape[0], int)
        if not ok or feature.get("dtype") not in NUMERIC or not shape or shape[0] <= 0:
            raise self._bad(
                f"feature {name!r} is {feature.get('dtype')} of shape {shape}; the {role} "
                "must be a numeric vector per frame"
            )
        return int(shape[0])

    def _vectors(self, name: str, values: np.ndarray, width: int) -> np.ndarray:
        """A state or action column as float32 (frames, width), checked to be finite and as
        wide as info.json says."""
        values = values.reshape(len(values), -1)
        if values.shape[1] != width:
            raise self._bad(
                f"data files: column {name!r} holds {values.shape[1]} values per frame, "
                f"meta/info.json says {width}"
            )
        bad_rows = np.flatnonzero(~np.isfinite(values.astype(np.float64)).all(axis=1))
        if len(bad_rows):
            raise self._bad(
                f"feature {name!r} holds non-finite values (frame {bad_rows[0]}); aloe "
                "trains on finite values only"
            )
        return values.astype(np.float32)

    def _feature(self, role: str, name: str) -> dict[str, Any]:
        """The feature `name` that --demos-map.`role` names; UsageError if there is none."""
        feature = self.dataset.features.get(name)
        if isinstance(feature, dict):
            return feature
        known = ", ".join(sorted(self.dataset.features))
        raise bad(
            f"--demos-map.{role}",
            name,
            f"no such feature in {self.path}; its features: {known}",
        )

    def _instruction_column(self) -> str:
        name = self.mapping.instruction
        if name == TASK:
            return "task_index"
        feature = self._feature("instruction", name)
        if feature.get("dtype") != "string":
            raise self._bad(
                f"feature {name!r} is {feature.get('dtype')}; an instruction is 'task' or "
                "a string feature"
            )
        return name

    def _instructions(self, column: np.ndarray) -> list[str]:
        """Each episode's instruction: that of its first frame."""
        firsts = np.cumsum(self.dataset.lengths) - self.dataset.lengths
        values = np.asarray(column).reshape(len(column), -1)[firsts, 0]
        if self.mapping.instruction != TASK:
            return [str(v) for v in values]
        tasks = self.dataset.tasks
        unknown = [int(v) for v in values if not 0 <= int(v) < len(tasks)]
        if unknown:
            raise self._bad(f"task_index {unknown[0]} is not in meta/tasks.parquet")
        return [tasks[int(v)] for v in values]

    def _read(self, names: list[str]) -> dict[str, np.ndarray]:
        try:
            return self.dataset.columns(names)
        except V3Error as e:
            raise self._bad(str(e)) from None

    def _bad(self, problem: str) -> UsageError:
        return bad(self.flag, self.path, problem)


@dataclass
class DemosPlan:
    """What a run imports: the dataset's episodes it uses, in order, and how."""

    demos: Demos
    target: DemosTarget
    cameras: dict[str, str]  # the run's cameras -> the dataset's video features
    use: list[int]  # the dataset's episode indices, in the order they are stored
    notice: str | None  # one line on the episodes left out, if any

    @property
    def frames(self) -> int:
        return int(sum(self.demos.dataset.lengths[e] for e in self.use))

    @property
    def instruction(self) -> str:
        """The most frequent instruction of the episodes it uses (the first of equals)."""
        return Counter(self.demos.instructions[e] for e in self.use).most_common(1)[0][0]

    def episodes(self, start: int = 0, batch_frames: int = BATCH_FRAMES) -> Iterator[list[Any]]:
        """`use[start:]` as aloe episodes, in batches of about `batch_frames` frames (one
        store append each; `start`: how many an interrupted import stored already)."""
        batch: list[int] = []
        for e in self.use[start:]:
            batch.append(e)
            if sum(self.demos.dataset.lengths[batch]) >= batch_frames:
                yield self._episodes(batch)
                batch = []
        if batch:
            yield self._episodes(batch)

    def _episodes(self, batch: list[int]) -> list[D.Episode]:
        images = {
            camera: list(self.demos.dataset.camera_frames(key, batch))
            for camera, key in self.cameras.items()
        }
        return [
            self._episode(e, {D.image_key(c): frames[k] for c, frames in images.items()})
            for k, e in enumerate(batch)
        ]

    def _actions(self, values: np.ndarray) -> np.ndarray:
        units = self.target.units
        return values if units is None else units.to_unit(values)

    def _episode(self, e: int, images: dict[str, np.ndarray]) -> D.Episode:
        demos = self.demos
        lo, hi = demos.bounds[e]
        n = hi - lo
        state = demos.state[lo:hi]
        last = np.arange(n) == n - 1
        steps = {
            D.STATE: state,
            D.NEXT_STATE: np.concatenate([state[1:], state[-1:]]),
            D.ACTION: self._actions(demos.action[lo:hi]),
            D.REWARD: np.where(last, 0.0, -1.0).astype(np.float32),  # Eq. 14, a success
            D.DONE: last,
            D.TRUNCATED: np.zeros(n, bool),
            D.SUCCESS: last,
            D.INTERVENTION: np.zeros(n, bool),
            D.SOURCE: np.full(n, "demo", dtype=object),
            D.POLICY_VERSION: np.full(n, -1, np.int32),
            D.FRAGMENT: np.zeros(n, np.int32),
            D.FAILURE_REASON: np.full(n, "", dtype=object),
            **images,
        }
        instruction = demos.instructions[e]
        task = self.target.task_of(instruction)
        assert task is not None  # `Demos.plan` checked every episode's
        meta = {"iteration": 0, "demos": os.path.abspath(demos.path), "demos_episode": e}
        return D.Episode(task=task, instruction=instruction, steps=steps, meta=meta)
