"""The crash-safe episode store: a LeRobotDataset v3 directory that only ever grows.

Each `append` writes one new data file, then one new episodes-meta file with the same file
number; the episodes-meta file is the commit point. Every file is written as `<name>.tmp`,
fsync'd, renamed and its directory fsync'd, so a kill at any moment loses at most the
append in flight: a data file no episodes-meta row points at, or a `*.tmp`, was never
committed and readers ignore it. `tasks.parquet` only grows and is written before the
commit; `stats.json` and `info.json` are derived from the episodes-meta rows and rewritten
after it, so a crash in between leaves them behind, which `open` recognises and the next
writer repairs. Nothing committed is rewritten. One writer at a time (an flock on
`meta/.writer.lock`); readers take no lock and see the store as it was at `open`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aloe.data import (
    ACTION,
    FAILURE_REASON,
    FRAGMENT,
    NEXT_STATE,
    REWARD,
    SIM_STATE,
    SOURCE,
    SOURCES,
    STATE,
    STEP_COLUMNS,
    SUCCESS,
    Episode,
)

CODEBASE_VERSION = "v3.0"
ALOE_FORMAT = 1
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
INFO_PATH, STATS_PATH, TASKS_PATH = "meta/info.json", "meta/stats.json", "meta/tasks.parquet"
LOCK_PATH = "meta/.writer.lock"
EPISODES = "meta/episodes"

VECTOR_COLUMNS = (STATE, NEXT_STATE, ACTION, SIM_STATE)
STATS_COLUMNS = (STATE, NEXT_STATE, ACTION, REWARD)
INDEX_COLUMNS: dict[str, Any] = {
    "timestamp": np.float32,  # frame_index / fps
    "frame_index": np.int64,
    "episode_index": np.int64,
    "index": np.int64,  # global frame index
    "task_index": np.int64,
}
_DTYPE_NAME: dict[Any, str] = {
    np.float32: "float32",
    np.float64: "float64",
    np.int32: "int32",
    np.int64: "int64",
    np.bool_: "bool",
    object: "string",
}
_NUMPY = {name: dtype for dtype, name in _DTYPE_NAME.items()}
_ARROW = {"float32": pa.float32(), "float64": pa.float64(), "int32": pa.int32()}
_ARROW |= {"int64": pa.int64(), "bool": pa.bool_(), "string": pa.string()}
_FILE_RE = re.compile(r"chunk-(\d+)/file-(\d+)\.parquet(\.tmp)?")
_INFO_KEYS = ("fps", "features", "chunks_size", "data_path")
_TOTALS = ("total_episodes", "total_frames", "total_tasks")

_STAT_FIELDS = [
    (f"stats/{key}/{stat}", pa.list_(pa.int64() if stat == "count" else pa.float64()))
    for key in STATS_COLUMNS
    for stat in ("min", "max", "mean", "std", "count")
]
META_SCHEMA = pa.schema(
    [(name, pa.int64()) for name in ("episode_index",)]
    + [("tasks", pa.list_(pa.string())), ("length", pa.int64())]
    + [(name, pa.int64()) for name in ("data/chunk_index", "data/file_index")]
    + [(name, pa.int64()) for name in ("dataset_from_index", "dataset_to_index")]
    + [(f"meta/episodes/{name}", pa.int64()) for name in ("chunk_index", "file_index")]
    + [("task_name", pa.string()), ("success", pa.bool_()), ("num_fragments", pa.int64())]
    + [(name, pa.int64()) for name in ("takeovers", "human_steps", "policy_steps", "demo_steps")]
    + [("failure_reasons", pa.list_(pa.string()))]
    + [("iteration", pa.int64()), ("seed", pa.int64())]
    + [("sim_attrs", pa.string()), ("meta_json", pa.string())]
    + _STAT_FIELDS
)
# Lets pandas (and so LeRobot) read tasks.parquet as a frame indexed by the task string.
_PANDAS_TASKS = {
    "index_columns": ["task"],
    "column_indexes": [],
    "columns": [
        {"name": n, "field_name": n, "pandas_type": p, "numpy_type": t, "metadata": None}
        for n, p, t in (("task_index", "int64", "int64"), ("task", "unicode", "object"))
    ],
}


class StoreError(Exception):
    """A store directory is missing, foreign or corrupt; the message names the file."""


def make_features(
    state_dim: int, action_dim: int, sim_state_dim: int | None = None
) -> dict[str, dict[str, Any]]:
    """info.json's `features`: dtype, shape and names of every data column."""
    dims = {STATE: state_dim, NEXT_STATE: state_dim, ACTION: action_dim, SIM_STATE: sim_state_dim}
    features: dict[str, dict[str, Any]] = {}
    for name, dtype in {**STEP_COLUMNS, SIM_STATE: np.float64, **INDEX_COLUMNS}.items():
        dim = dims.get(name)
        if name in VECTOR_COLUMNS and dim is not None:
            prefix = name.split(".")[-1]
            names = [f"{prefix}_{i}" for i in range(dim)]
            features[name] = {"dtype": _DTYPE_NAME[dtype], "shape": [dim], "names": names}
        elif name not in VECTOR_COLUMNS:
            features[name] = {"dtype": _DTYPE_NAME[dtype], "shape": [1], "names": None}
    return features


@dataclass
class _State:
    info: dict[str, Any]
    tasks: list[str]
    meta: pa.Table  # every committed episodes-meta row, in episode order
    files: list[int]  # file numbers of the committed episodes-meta files, in order
    bounds: list[tuple[int, int]]  # (episodes, frames) after 0, 1, ... of those files
    stale: bool  # info.json lags the episodes-meta files (a crash after a commit)


@dataclass(frozen=True)
class _Run:
    """One data file and the contiguous block of episodes-meta rows that point at it."""

    path: Path
    lo: int  # first meta row
    hi: int  # one past the last meta row
    frames: tuple[int, int]  # global frame range [from, to)


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
    ) -> EpisodeStore:
        """Make an empty store at `root`, which must not exist or be an empty directory."""
        root = Path(root)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            what = "is an aloe store already" if (root / INFO_PATH).exists() else "is not empty"
            raise StoreError(f"{root}: {what}; refusing to create a store there")
        if fps <= 0 or state_dim <= 0 or action_dim <= 0 or (sim_state_dim or 1) <= 0:
            raise ValueError(f"{root}: fps and dims must be positive")
        info = {
            "codebase_version": CODEBASE_VERSION,
            "aloe_format": ALOE_FORMAT,
            "robot_type": robot_type,
            "fps": fps,
            "features": make_features(state_dim, action_dim, sim_state_dim),
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
            taken = [
                *_numbers(self.root, "data", cs, True),
                *_numbers(self.root, EPISODES, cs, True),
            ]
            number = 1 + max(taken, default=-1)
            for pattern in ("meta/*.tmp", "meta/episodes/chunk-*/*.tmp", "data/chunk-*/*.tmp"):
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
            _write_parquet(self.root / _fmt(EPISODES_PATH, number, cs), meta)  # commit point
            self._state.meta = pa.concat_tables([self._state.meta, meta]).combine_chunks()
            self._state.files.append(number)
            self._state.bounds.append((first_ep + len(eps), first_frame + data.num_rows))
            self._write_summaries()
        return list(range(first_ep, first_ep + len(eps)))

    def load_frames(self, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every committed frame in global index order: vectors 2-D, strings as objects."""
        names = list(self._features) if columns is None else list(columns)
        unknown = [name for name in names if name not in self._features]
        if unknown:
            raise KeyError(f"{self.root}: no column(s) {unknown}; columns: {list(self._features)}")
        schema = pa.schema([_data_schema(self._features).field(name) for name in names])
        runs = _data_runs(self.root, self._state.meta)
        tables = [_read_parquet(run.path, names, schema) for run in runs]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        return {name: _to_numpy(table[name], self._features[name]) for name in names}

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
        cs = self._info["chunks_size"]
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
            rows.append(_meta_row(ep, index, first_frame, number // cs, number % cs))
            first_frame += len(ep)
        return pa.concat_tables(data), pa.Table.from_pylist(rows, schema=META_SCHEMA)

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


def _load(root: Path) -> _State:
    # Order matters for a reader racing a writer: info.json first (it can only lag),
    # then the episodes-meta files, then tasks.parquet (written before each commit).
    if not root.is_dir():
        raise StoreError(f"{root}: not a directory")
    info = _read_info(root)
    cs = info["chunks_size"]
    files = _numbers(root, EPISODES, cs)
    tables = [
        _read_parquet(root / _fmt(EPISODES_PATH, number, cs), META_SCHEMA.names, META_SCHEMA)
        for number in files
    ]
    tasks = _read_tasks(root)
    bounds = [(0, 0)]
    for number, table in zip(files, tables, strict=True):
        bounds.append(_check_meta(root / _fmt(EPISODES_PATH, number, cs), table, bounds[-1], tasks))
    meta = pa.concat_tables(tables).combine_chunks() if tables else META_SCHEMA.empty_table()
    names = set(info["features"])
    for run in _data_runs(root, meta):
        if not run.path.is_file():
            raise StoreError(f"{run.path}: missing (holds episodes {run.lo}..{run.hi - 1})")
        try:
            footer = pq.read_metadata(run.path)
        except (OSError, pa.ArrowException) as e:
            raise StoreError(f"{run.path}: unreadable parquet ({_one_line(e)})") from None
        if footer.num_rows != run.frames[1] - run.frames[0]:
            raise StoreError(
                f"{run.path}: has {footer.num_rows} rows, episodes {run.lo}..{run.hi - 1} "
                f"span frames [{run.frames[0]}, {run.frames[1]})"
            )
        missing = sorted(names - set(footer.schema.to_arrow_schema().names))
        if missing:
            raise StoreError(f"{run.path}: missing column {missing[0]!r}")
    stated = (info["total_episodes"], info["total_frames"])
    if stated not in bounds or info["total_tasks"] > len(tasks):
        raise StoreError(
            f"{root / INFO_PATH}: totals {stated} episodes/frames and {info['total_tasks']} tasks "
            f"disagree with the episodes-meta files {bounds[-1]} and {len(tasks)} tasks"
        )
    stale = stated != bounds[-1] or info["total_tasks"] != len(tasks)
    return _State(info, tasks, meta, files, bounds, stale)


def _read_info(root: Path) -> dict[str, Any]:
    path = root / INFO_PATH
    if not path.is_file():
        raise StoreError(f"{path}: missing, so {root} is not an aloe store")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: unreadable JSON ({_one_line(e)})") from None
    if not isinstance(info, dict):
        raise StoreError(f"{path}: not a JSON object")
    if info.get("codebase_version") != CODEBASE_VERSION:
        version = info.get("codebase_version")
        raise StoreError(f"{path}: codebase_version {version!r}, expected {CODEBASE_VERSION!r}")
    if info.get("aloe_format") != ALOE_FORMAT:
        raise StoreError(f"{path}: aloe_format {info.get('aloe_format')!r}, expected 1")
    for key in _INFO_KEYS + _TOTALS:
        if key not in info:
            raise StoreError(f"{path}: missing key {key!r}")
    totals_ok = all(isinstance(info[key], int) and info[key] >= 0 for key in _TOTALS)
    if not totals_ok or not isinstance(info["chunks_size"], int) or info["chunks_size"] <= 0:
        raise StoreError(f"{path}: totals and chunks_size must be non-negative integers")
    features = info["features"]
    dims = [_dim(features, name) for name in (STATE, ACTION)]
    if not isinstance(features, dict) or None in dims:
        raise StoreError(f"{path}: features lack valid {STATE!r} and {ACTION!r} shapes")
    sim_dim = _dim(features, SIM_STATE) if SIM_STATE in features else None
    for name, want in make_features(dims[0] or 0, dims[1] or 0, sim_dim).items():
        got = features.get(name) or {}
        if (got.get("dtype"), got.get("shape")) != (want["dtype"], want["shape"]):
            raise StoreError(f"{path}: feature {name!r} is {got}, expected {want}")
    if info["data_path"] != DATA_PATH:
        raise StoreError(f"{path}: data_path {info['data_path']!r}, expected {DATA_PATH!r}")
    return info


def _dim(features: Any, name: str) -> int | None:
    try:
        dim = features[name]["shape"][0]
    except (KeyError, TypeError, IndexError):
        return None
    return dim if isinstance(dim, int) and dim > 0 else None


def _read_tasks(root: Path) -> list[str]:
    path = root / TASKS_PATH
    table = _read_parquet(path, ["task_index", "task"])
    if table["task_index"].to_pylist() != list(range(table.num_rows)):
        raise StoreError(f"{path}: task_index is not 0..{table.num_rows - 1} in order")
    tasks = [str(t) for t in table["task"].to_pylist()]
    if len(set(tasks)) != len(tasks):
        raise StoreError(f"{path}: a task string appears twice")
    return tasks


def _check_meta(
    path: Path, table: pa.Table, start: tuple[int, int], tasks: list[str]
) -> tuple[int, int]:
    """Check one episodes-meta file continues the ones before it; return the new bounds."""
    episodes, frames = start
    if table["episode_index"].to_pylist() != list(range(episodes, episodes + table.num_rows)):
        raise StoreError(
            f"{path}: episode_index {table['episode_index'].to_pylist()[:8]} does not continue "
            f"from {episodes} (a gap or a duplicate)"
        )
    length = table["length"].to_pylist()
    starts, ends = table["dataset_from_index"].to_pylist(), table["dataset_to_index"].to_pylist()
    for n, lo, hi in zip(length, starts, ends, strict=True):
        if n is None or n <= 0 or lo != frames or hi != frames + n:
            raise StoreError(
                f"{path}: frames [{lo}, {hi}) of length {n} do not continue from frame {frames}"
            )
        frames = hi
    unknown = {t for ts in table["tasks"].to_pylist() for t in ts or [None]} - set(tasks)
    if unknown:
        raise StoreError(f"{path}: tasks {sorted(map(str, unknown))} are not in {TASKS_PATH}")
    return episodes + table.num_rows, frames


def _data_runs(root: Path, meta: pa.Table) -> list[_Run]:
    chunks, files = meta["data/chunk_index"].to_pylist(), meta["data/file_index"].to_pylist()
    keys = list(zip(chunks, files, strict=True))
    lo, hi = meta["dataset_from_index"].to_pylist(), meta["dataset_to_index"].to_pylist()
    runs: list[_Run] = []
    seen: set[Path] = set()
    for row, key in enumerate(keys):
        if row and key == keys[row - 1]:
            runs[-1] = _Run(runs[-1].path, runs[-1].lo, row + 1, (runs[-1].frames[0], hi[row]))
            continue
        path = root / DATA_PATH.format(chunk_index=key[0], file_index=key[1])
        if path in seen:
            raise StoreError(f"{path}: its episodes are not contiguous in the episodes-meta files")
        seen.add(path)
        runs.append(_Run(path, row, row + 1, (lo[row], hi[row])))
    return runs


def _check_data_file(run: _Run, state: _State) -> list[str]:
    try:
        table = pq.read_table(run.path)
    except (OSError, pa.ArrowException) as e:
        return [f"{run.path}: unreadable parquet ({_one_line(e)})"]
    features = state.info["features"]
    wrong = [
        f"{run.path}: column {f.name!r} is {table.schema.field(f.name).type}, expected {f.type}"
        for f in _data_schema(features)
        if table.schema.field(f.name).type != f.type
    ]
    if wrong:
        return wrong
    meta = state.meta.slice(run.lo, run.hi - run.lo)
    length = np.asarray(meta["length"].to_pylist())
    frame = np.concatenate([np.arange(n) for n in length])
    task = [state.tasks.index(ts[0]) for ts in meta["tasks"].to_pylist()]
    expected = {
        "index": np.arange(*run.frames),
        "episode_index": np.repeat(meta["episode_index"].to_pylist(), length),
        "frame_index": frame,
        "task_index": np.repeat(task, length),
        "timestamp": (frame / state.info["fps"]).astype(np.float32),
    }
    problems = [
        f"{run.path}: column {name!r} disagrees with the episodes-meta rows"
        for name, want in expected.items()
        if not np.array_equal(_to_numpy(table[name], features[name]), want)
    ]
    source = _to_numpy(table[SOURCE], features[SOURCE])
    starts, ends = np.r_[0, np.cumsum(length)[:-1]], np.cumsum(length) - 1
    for s in SOURCES:
        if np.add.reduceat(source == s, starts).tolist() != meta[f"{s}_steps"].to_pylist():
            problems.append(f"{run.path}: {s} step counts disagree with the episodes-meta rows")
    if _to_numpy(table[SUCCESS], features[SUCCESS])[ends].tolist() != meta["success"].to_pylist():
        problems.append(f"{run.path}: success flags disagree with the episodes-meta rows")
    for name in (*STATS_COLUMNS, SIM_STATE):
        if name in features and not np.isfinite(_to_numpy(table[name], features[name])).all():
            problems.append(f"{run.path}: column {name!r} holds non-finite values")
    return problems


def _data_schema(features: dict[str, dict[str, Any]]) -> pa.Schema:
    fields = []
    for name, feature in features.items():
        value = _ARROW[feature["dtype"]]
        fields.append(
            (name, pa.list_(value, feature["shape"][0]) if name in VECTOR_COLUMNS else value)
        )
    return pa.schema(fields)


def _to_arrow(values: Any, type_: pa.DataType) -> pa.Array:
    if pa.types.is_fixed_size_list(type_):
        flat = np.asarray(values, dtype=type_.value_type.to_pandas_dtype()).reshape(-1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat), type_.list_size)
    if pa.types.is_string(type_):
        strings = ["" if v is None else str(v) for v in np.asarray(values).reshape(-1)]
        return pa.array(strings, pa.string())
    return pa.array(np.asarray(values, dtype=type_.to_pandas_dtype()).reshape(-1))


def _to_numpy(column: pa.ChunkedArray, feature: dict[str, Any]) -> np.ndarray:
    dtype = _NUMPY[feature["dtype"]]
    if pa.types.is_fixed_size_list(column.type):
        array = column.combine_chunks()
        flat = array.flatten().to_numpy(zero_copy_only=False)
        return np.asarray(flat, dtype=dtype).reshape(len(array), feature["shape"][0])
    return np.asarray(column.to_numpy(), dtype=dtype)


def _read_parquet(path: Path, columns: Sequence[str], schema: pa.Schema | None = None) -> pa.Table:
    """Read `columns` of a parquet file, cast to `schema`; StoreError names what is wrong."""
    if not path.is_file():
        raise StoreError(f"{path}: missing")
    try:
        with pq.ParquetFile(path) as file:
            missing = sorted(set(columns) - set(file.schema_arrow.names))
            if missing:
                raise StoreError(f"{path}: missing column {missing[0]!r}")
            table = file.read(columns=list(columns), use_threads=False)
    except (OSError, pa.ArrowException) as e:
        raise StoreError(f"{path}: unreadable parquet ({_one_line(e)})") from None
    if schema is None or table.schema.equals(schema):
        return table
    try:
        return table.cast(schema)
    except (pa.ArrowException, ValueError) as e:
        raise StoreError(f"{path}: unexpected column types ({_one_line(e)})") from None


def _numbers(root: Path, sub: str, chunks_size: int, tmp: bool = False) -> list[int]:
    """File numbers (chunk * chunks_size + file) of the parquet files under `root/sub`."""
    numbers = []
    for path in (root / sub).glob("chunk-*/file-*"):
        match = _FILE_RE.fullmatch(f"{path.parent.name}/{path.name}")
        if match and (tmp or not match[3]):
            numbers.append(int(match[1]) * chunks_size + int(match[2]))
    return sorted(numbers)


def _fmt(template: str, number: int, chunks_size: int) -> str:
    return template.format(chunk_index=number // chunks_size, file_index=number % chunks_size)


def _write_tasks(root: Path, tasks: list[str]) -> None:
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": tasks})
    schema = pa.schema([table.schema.field(0), pa.field("task", pa.string())])
    table = table.cast(schema).replace_schema_metadata({"pandas": json.dumps(_PANDAS_TASKS)})
    _write_parquet(root / TASKS_PATH, table)


def _write_parquet(path: Path, table: pa.Table) -> None:
    _write_atomic(path, lambda f: pq.write_table(table, f))


def _write_json(path: Path, obj: Any) -> None:
    _write_atomic(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def _write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    _ensure_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _ensure_dir(path: Path) -> None:
    if not path.is_dir():
        _ensure_dir(path.parent)
        path.mkdir(exist_ok=True)
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
