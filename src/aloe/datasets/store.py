"""The crash-safe episode store: a LeRobotDataset v3 directory that only ever grows.

Each `append` writes one new data file, one new mp4 per camera (videos/, if the store has
cameras), then one new episodes-meta file, all with the same file number; the episodes-meta
file is the commit point. Every file is written as `<name>.tmp`,
fsync'd, renamed and its directory fsync'd, so a kill at any moment loses at most the
append in flight: a data or video file no episodes-meta row points at, or a `*.tmp`, was
never committed and readers ignore it. `tasks.parquet` only grows and is written before the
commit; `stats.json` and `info.json` are derived from the episodes-meta rows and rewritten
after it, so a crash in between leaves them behind, which `open` recognises and the next
writer repairs. Nothing committed is rewritten. One writer at a time (an flock on
`meta/.writer.lock`); readers take no lock and see the store as it was at `open`.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from aloe.data import (
    ACTION,
    FAILURE_REASON,
    FRAGMENT,
    IMAGE_PREFIX,
    SIM_STATE,
    SOURCE,
    SOURCES,
    STATE,
    Episode,
    image_key,
)
from aloe.datasets import video
from aloe.datasets._format import (
    ALOE_FORMAT,
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_PATH,
    EPISODES,
    EPISODES_PATH,
    INDEX_COLUMNS,
    INFO_PATH,
    LOCK_PATH,
    STATS_COLUMNS,
    STATS_PATH,
    VECTOR_COLUMNS,
    VIDEO_PATH,
    StoreError,
    _check_data_file,
    _check_video_file,
    _data_runs,
    _data_schema,
    _ensure_dir,
    _fmt,
    _fsync_dir,
    _load,
    _numbers,
    _one_line,
    _read_parquet,
    _read_tasks,
    _State,
    _to_arrow,
    _to_numpy,
    _write_atomic,
    _write_json,
    _write_parquet,
    _write_tasks,
    data_features,
    make_features,
    meta_schema,
    video_keys,
)
from aloe.datasets.video import VideoFile


class EpisodeStore:
    """Episodes on disk in the LeRobotDataset v3 layout; `append` is the only way to write."""

    def __init__(self, root: Path, state: _State) -> None:
        self.root = root
        self._state = state

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        *,
        fps: float,
        state_dim: int,
        action_dim: int,
        robot_type: str = "sawyer",
        sim_state_dim: int | None = None,
        cameras: Mapping[str, tuple[int, int]] | None = None,
        video_codec: str = "h264",
    ) -> EpisodeStore:
        """Make an empty store at `root`, which must not exist or be an empty directory.

        `cameras` maps camera names to image (height, width); their images are kept as mp4
        videos (`video_codec`: "h264", small and lossy, or "lossless", bit-exact).
        """
        root = Path(root)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            what = "is an aloe store already" if (root / INFO_PATH).exists() else "is not empty"
            raise StoreError(f"{root}: {what}; refusing to create a store there")
        if fps <= 0 or state_dim <= 0 or action_dim <= 0 or (sim_state_dim or 1) <= 0:
            raise ValueError(f"{root}: fps and dims must be positive")
        features = make_features(state_dim, action_dim, sim_state_dim)
        video.check_codec(video_codec)
        for camera, (height, width) in (cameras or {}).items():
            features[image_key(camera)] = video.video_feature(height, width, fps, video_codec)
        info = {
            "codebase_version": CODEBASE_VERSION,
            "aloe_format": ALOE_FORMAT,
            "robot_type": robot_type,
            "fps": fps,
            "features": features,
            "total_episodes": 0,
            "total_frames": 0,
            "total_tasks": 0,
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200,
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "splits": {},
        }
        # Built aside and renamed into place, so a crash never leaves a half-made store.
        staging = root.with_name(f".{root.name}.creating-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        _ensure_dir(staging / "meta" / "episodes")
        _ensure_dir(staging / "data")
        _write_tasks(staging, [])
        _write_json(staging / STATS_PATH, {})
        _write_json(staging / INFO_PATH, info)
        os.replace(staging, root)
        _fsync_dir(root.parent)
        return cls.open(root)

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> EpisodeStore:
        """Validate the metadata and every data file's footer; raise StoreError if corrupt."""
        return cls(Path(root), _load(Path(root)))

    @classmethod
    def open_or_create(cls, root: str | os.PathLike[str], **create_kwargs: Any) -> EpisodeStore:
        """Open the store at `root` to grow it, or create it there if there is none."""
        root = Path(root)
        if not (root / INFO_PATH).exists():
            return cls.create(root, **create_kwargs)
        store = cls.open(root)
        have: dict[str, Any] = {
            "fps": store.fps,
            "state_dim": store.state_dim,
            "action_dim": store.action_dim,
        }
        have |= {"sim_state_dim": store.sim_state_dim, "robot_type": store._info["robot_type"]}
        have |= {"cameras": {c: store.image_shape(c) for c in store.cameras}}
        have |= {"video_codec": store.video_codec or create_kwargs.get("video_codec")}
        if "cameras" in create_kwargs:
            cameras = create_kwargs["cameras"] or {}
            create_kwargs |= {"cameras": {c: tuple(shape) for c, shape in cameras.items()}}
        for key, value in create_kwargs.items():
            if key not in have or have[key] != value:
                raise StoreError(f"{root}: existing store has {key}={have.get(key)}, not {value}")
        if store._state.stale:
            with _locked(root):
                store._refresh()
                store._write_summaries()
        return store

    @property
    def num_episodes(self) -> int:
        return self._state.bounds[-1][0]

    @property
    def num_frames(self) -> int:
        return self._state.bounds[-1][1]

    @property
    def fps(self) -> float:
        return float(self._info["fps"])

    @property
    def state_dim(self) -> int:
        return int(self._features[STATE]["shape"][0])

    @property
    def action_dim(self) -> int:
        return int(self._features[ACTION]["shape"][0])

    @property
    def sim_state_dim(self) -> int | None:
        return int(self._features[SIM_STATE]["shape"][0]) if SIM_STATE in self._features else None

    @property
    def cameras(self) -> list[str]:
        """Names of the cameras whose images the store keeps as videos."""
        return [key.removeprefix(IMAGE_PREFIX) for key in video_keys(self._features)]

    def image_shape(self, camera: str) -> tuple[int, int]:
        """(height, width) of `camera`'s images."""
        height, width, _ = self._features[self._video_key(camera)]["shape"]
        return int(height), int(width)

    @property
    def video_codec(self) -> str | None:
        """The codec the videos are written with (a name in `video.CODECS`); None: no cameras."""
        keys = video_keys(self._features)
        return video.codec_of(self._features[keys[0]]) if keys else None

    @property
    def _info(self) -> dict[str, Any]:
        return self._state.info

    @property
    def _features(self) -> dict[str, dict[str, Any]]:
        return self._state.info["features"]

    def tasks(self) -> list[str]:
        """Instruction strings, indexed by task_index."""
        return list(self._state.tasks)

    def episodes(self) -> pa.Table:
        """One row per episode, in episode order (columns: META_SCHEMA)."""
        return self._state.meta

    def append(self, episodes: Episode | Sequence[Episode]) -> list[int]:
        """Commit `episodes` as one new data file; return their episode indices."""
        eps = [episodes] if isinstance(episodes, Episode) else list(episodes)
        for k, ep in enumerate(eps):
            self._validate(ep, k)
        if not eps:
            return []
        with _locked(self.root):
            self._refresh()
            cs = self._info["chunks_size"]
            # Past every file number on disk, uncommitted ones too: an orphan is never reused.
            folders = ["data", EPISODES, *(f"videos/{k}" for k in video_keys(self._features))]
            taken = [n for folder in folders for n in _numbers(self.root, folder, cs, True)]
            number = 1 + max(taken, default=-1)
            for pattern in (
                "meta/*.tmp",
                "meta/episodes/chunk-*/*.tmp",
                "data/chunk-*/*.tmp",
                "videos/*/chunk-*/*.tmp",
            ):
                for tmp in self.root.glob(pattern):
                    tmp.unlink(missing_ok=True)
            tasks = list(self._state.tasks)
            tasks += [t for t in dict.fromkeys(ep.instruction for ep in eps) if t not in tasks]
            first_ep, first_frame = self.num_episodes, self.num_frames
            data, meta = self._tables(eps, tasks, number, first_ep, first_frame)
            if len(tasks) > len(self._state.tasks):
                _write_tasks(self.root, tasks)
                self._state.tasks = tasks
            _write_parquet(self.root / _fmt(DATA_PATH, number, cs), data)
            self._write_videos(eps, number)
            _write_parquet(self.root / _fmt(EPISODES_PATH, number, cs), meta)  # commit point
            self._state.meta = pa.concat_tables([self._state.meta, meta]).combine_chunks()
            self._state.files.append(number)
            self._state.bounds.append((first_ep + len(eps), first_frame + data.num_rows))
            self._write_summaries()
        return list(range(first_ep, first_ep + len(eps)))

    def load_frames(self, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every committed frame in global index order: vectors 2-D, strings as objects.

        Camera images are not among the columns: see `load_images`.
        """
        features = data_features(self._features)
        names = list(features) if columns is None else list(columns)
        unknown = [name for name in names if name not in features]
        if unknown:
            raise KeyError(f"{self.root}: no column(s) {unknown}; columns: {list(features)}")
        schema = pa.schema([_data_schema(self._features).field(name) for name in names])
        runs = _data_runs(self.root, self._state.meta)
        tables = [_read_parquet(run.path, names, schema) for run in runs]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        return {name: _to_numpy(table[name], self._features[name]) for name in names}

    def video_files(self, key: str) -> list[VideoFile]:
        """The committed mp4s of a camera (its name or its `observation.images.*` key), in order."""
        key = self._video_key(key)
        files = []
        for run in _data_runs(self.root, self._state.meta, key):
            file_id = f"{run.path.parent.name}/{run.path.stem}"
            files.append(VideoFile(file_id, run.path, np.arange(*run.frames, dtype=np.int64)))
        return files

    def read_video(self, key: str, file_id: str) -> np.ndarray:
        """The frames of one of `video_files(key)`, uint8 (n, H, W, 3)."""
        for file in self.video_files(key):
            if file.file_id == file_id:
                return self._decode(key, file)
        raise KeyError(f"{self.root}: {key!r} has no committed video {file_id!r}")

    def load_images(self, key: str) -> np.ndarray:
        """Every committed frame of a camera in global index order, uint8 (N, H, W, 3)."""
        height, width = self.image_shape(key)
        frames = [self._decode(key, file) for file in self.video_files(key)]
        return np.concatenate(frames) if frames else np.zeros((0, height, width, 3), np.uint8)

    def summary(self) -> dict[str, Any]:
        """Counts for a human: frames by source, per iteration, takeovers, failures."""
        meta = self._state.meta
        iterations = meta["iteration"].to_pylist()
        frames_per_iteration: Counter[int] = Counter()
        for iteration, length in zip(iterations, meta["length"].to_pylist(), strict=True):
            frames_per_iteration[iteration] += length
        success = meta["success"].to_pylist()
        reasons = Counter(r for rs in meta["failure_reasons"].to_pylist() for r in rs)
        return {
            "episodes": self.num_episodes,
            "frames": self.num_frames,
            "tasks": len(self._state.tasks),
            "frames_by_source": {s: sum(meta[f"{s}_steps"].to_pylist()) for s in SOURCES},
            "episodes_per_iteration": dict(sorted(Counter(iterations).items())),
            "frames_per_iteration": dict(sorted(frames_per_iteration.items())),
            "takeovers": sum(meta["takeovers"].to_pylist()),
            "human_steps": sum(meta["human_steps"].to_pylist()),
            "success_rate": sum(success) / len(success) if success else None,
            "failure_reasons": dict(reasons.most_common()),
            "cameras": {c: self.image_shape(c) for c in self.cameras},
        }

    def check(self) -> list[str]:
        """Full validation, reading every data file; an empty list means healthy."""
        try:
            state = _load(self.root)
        except StoreError as e:
            return [str(e)]
        problems = []
        for run in _data_runs(self.root, state.meta):
            problems += _check_data_file(run, state)
        for key in video_keys(state.info["features"]):
            for run in _data_runs(self.root, state.meta, key):
                problems += _check_video_file(run, state, key)
        try:
            stats = json.loads((self.root / STATS_PATH).read_text())
        except (OSError, ValueError) as e:
            return [*problems, f"{self.root / STATS_PATH}: unreadable ({_one_line(e)})"]
        frames = state.bounds[-1][1]
        count = stats.get(STATE, {}).get("count") if isinstance(stats, dict) else None
        if not state.stale and frames and count != [frames]:
            problems.append(f"{self.root / STATS_PATH}: counts disagree with {frames} frames")
        return problems

    def _validate(self, ep: Episode, k: int) -> None:
        try:
            ep.validate()
        except ValueError as e:
            raise ValueError(f"episode {k}: {e}") from None
        n = len(ep)
        extra = sorted(set(ep.steps) - set(self._features))
        if extra:
            raise ValueError(f"episode {k}: column(s) {extra} are not features of {self.root}")
        for name, feature in self._features.items():
            if video.is_video(feature):
                self._validate_images(ep, k, name, feature)
                continue
            if name in INDEX_COLUMNS:
                continue
            if name not in ep.steps:
                raise ValueError(f"episode {k}: column {name!r} is missing; {self.root} has it")
            shape = np.shape(ep.steps[name])
            want = [(n, feature["shape"][0])] if name in VECTOR_COLUMNS else [(n,), (n, 1)]
            if shape not in want:
                raise ValueError(
                    f"episode {k}: column {name!r} has shape {shape}, {self.root} expects {want[0]}"
                )

    def _validate_images(self, ep: Episode, k: int, key: str, feature: dict[str, Any]) -> None:
        want = (len(ep), *feature["shape"])
        images = ep.steps.get(key)
        if images is None:
            raise ValueError(f"episode {k}: column {key!r} is missing; {self.root} has it")
        if images.shape != want or images.dtype != np.uint8:
            raise ValueError(
                f"episode {k}: column {key!r} is {images.dtype} {images.shape}, "
                f"{self.root} expects uint8 {want}"
            )

    def _video_key(self, key: str) -> str:
        for name in (key, image_key(key)):
            if video.is_video(self._features.get(name, {})):
                return name
        raise KeyError(f"{self.root}: no camera {key!r}; cameras: {self.cameras}")

    def _decode(self, key: str, file: VideoFile) -> np.ndarray:
        try:
            frames = video.decode(file.path)
        except ValueError as e:
            raise StoreError(f"{file.path}: {e}") from None
        want = (len(file.index), *self.image_shape(key), 3)
        if frames.shape != want:
            raise StoreError(f"{file.path}: decodes to {frames.shape} frames, expected {want}")
        return frames

    def _write_videos(self, eps: list[Episode], number: int) -> None:
        cs, codec = self._info["chunks_size"], self.video_codec
        for key in video_keys(self._features):
            assert codec is not None
            frames = np.concatenate([ep.steps[key] for ep in eps])
            path = self.root / VIDEO_PATH.format(
                video_key=key, chunk_index=number // cs, file_index=number % cs
            )
            _write_atomic(
                path, functools.partial(video.encode, frames=frames, fps=self.fps, codec=codec)
            )

    def _refresh(self) -> None:
        """Catch up with appends another writer committed since this store was opened."""
        if _numbers(self.root, EPISODES, self._info["chunks_size"]) != self._state.files:
            self._state = _load(self.root)
        else:
            self._state.tasks = _read_tasks(self.root)

    def _tables(
        self, eps: list[Episode], tasks: list[str], number: int, first_ep: int, first_frame: int
    ) -> tuple[pa.Table, pa.Table]:
        schema = _data_schema(self._features)
        cs, start = self._info["chunks_size"], first_frame
        data, rows = [], []
        for index, ep in enumerate(eps, start=first_ep):
            frame = np.arange(len(ep))
            columns = {
                **ep.steps,
                "timestamp": frame / self.fps,
                "frame_index": frame,
                "episode_index": np.full(len(ep), index),
                "index": first_frame + frame,
                "task_index": np.full(len(ep), tasks.index(ep.instruction)),
            }
            arrays = [_to_arrow(columns[f.name], f.type) for f in schema]
            data.append(pa.Table.from_arrays(arrays, schema=schema))
            row = _meta_row(ep, index, first_frame, number // cs, number % cs)
            offset = (first_frame - start) / self.fps  # where the episode begins in the mp4s
            for key in video_keys(self._features):
                row[f"videos/{key}/chunk_index"] = number // cs
                row[f"videos/{key}/file_index"] = number % cs
                row[f"videos/{key}/from_timestamp"] = offset
                row[f"videos/{key}/to_timestamp"] = offset + len(ep) / self.fps
            rows.append(row)
            first_frame += len(ep)
        meta = pa.Table.from_pylist(rows, schema=meta_schema(self._features))
        return pa.concat_tables(data), meta

    def _write_summaries(self) -> None:
        state = self._state
        episodes, frames = state.bounds[-1]
        info = state.info | {"total_episodes": episodes, "total_frames": frames}
        info |= {"total_tasks": len(state.tasks), "splits": {"train": f"0:{episodes}"}}
        _write_json(self.root / STATS_PATH, _aggregate_stats(state.meta))
        _write_json(self.root / INFO_PATH, info)
        state.info, state.stale = info, False


def _meta_row(ep: Episode, index: int, start: int, chunk: int, file: int) -> dict[str, Any]:
    n, steps = len(ep), ep.steps
    source = np.asarray(steps[SOURCE]).astype(str).reshape(-1)
    fragment = np.asarray(steps[FRAGMENT]).reshape(-1)
    cuts = (fragment[1:] != fragment[:-1]) | (source[1:] != source[:-1])
    fragments = source[np.flatnonzero(np.r_[True, cuts])].tolist()
    takeovers = sum(
        a == "policy" and b == "human" for a, b in zip(fragments, fragments[1:], strict=False)
    )
    meta = dict(ep.meta)
    seed, iteration = meta.pop("seed", None), meta.pop("iteration", None)
    sim_attrs = meta.pop("sim_attrs", {})
    row: dict[str, Any] = {
        "episode_index": index,
        "tasks": [ep.instruction],
        "length": n,
        "data/chunk_index": chunk,
        "data/file_index": file,
        "dataset_from_index": start,
        "dataset_to_index": start + n,
        "meta/episodes/chunk_index": chunk,
        "meta/episodes/file_index": file,
        "task_name": ep.task,
        "success": ep.success,
        "num_fragments": len(fragments),
        "takeovers": takeovers,
        **{f"{s}_steps": int((source == s).sum()) for s in SOURCES},
        "failure_reasons": [str(r) for r in np.asarray(steps[FAILURE_REASON]).reshape(-1) if r],
        "iteration": -1 if iteration is None else int(iteration),
        "seed": None if seed is None else int(seed),
        "sim_attrs": json.dumps(sim_attrs, sort_keys=True, default=_jsonable),
        "meta_json": json.dumps(meta, sort_keys=True, default=_jsonable),
    }
    for key in STATS_COLUMNS:
        x = np.asarray(steps[key], dtype=np.float32).astype(np.float64).reshape(n, -1)
        for stat in ("min", "max", "mean", "std"):
            row[f"stats/{key}/{stat}"] = getattr(x, stat)(axis=0).tolist()
        row[f"stats/{key}/count"] = [n]
    return row


def _aggregate_stats(meta: pa.Table) -> dict[str, dict[str, list[float]]]:
    """Pool per-episode stats into dataset stats (LeRobot's stats.json layout)."""
    if meta.num_rows == 0:
        return {}
    n = meta["length"].to_numpy().astype(np.float64)[:, None]
    stats = {}
    for key in STATS_COLUMNS:
        col = {s: _matrix(meta[f"stats/{key}/{s}"]) for s in ("min", "max", "mean", "std")}
        mean = (n * col["mean"]).sum(0) / n.sum()
        var = (n * (col["std"] ** 2 + col["mean"] ** 2)).sum(0) / n.sum() - mean**2
        stats[key] = {
            "mean": mean.tolist(),
            "std": np.sqrt(np.maximum(var, 0.0)).tolist(),
            "min": col["min"].min(0).tolist(),
            "max": col["max"].max(0).tolist(),
            "count": [int(n.sum())],
        }
    return stats


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    """A list column whose rows have equal lengths, as a 2-D array."""
    return column.combine_chunks().flatten().to_numpy().reshape(len(column), -1)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    fd = os.open(root / LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    raise TypeError(f"episode meta value {obj!r} is not JSON-serialisable")
