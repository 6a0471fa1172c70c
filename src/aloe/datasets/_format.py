"""The episode store's on-disk format: LeRobotDataset v3 paths and schemas, reading and
validating what is on disk, and the atomic writes the store commits through.

`EpisodeStore` (in `store.py`) decides what is written in which order; the crash-safety
argument is in that module's docstring.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aloe.data import (
    ACTION,
    NEXT_STATE,
    REWARD,
    SIM_STATE,
    SOURCE,
    SOURCES,
    STATE,
    STEP_COLUMNS,
    SUCCESS,
)
from aloe.datasets import video

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
_FILE_RE = re.compile(r"chunk-(\d+)/file-(\d+)\.(?:parquet|mp4)(\.tmp)?")
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


def meta_schema(features: dict[str, Any]) -> pa.Schema:
    """META_SCHEMA plus LeRobot's `videos/<key>/...` columns for each camera of `features`."""
    fields = [f for key in video_keys(features) for f in video.meta_fields(key)]
    return pa.schema([*META_SCHEMA, *(pa.field(name, type_) for name, type_ in fields)])


def video_keys(features: dict[str, Any]) -> list[str]:
    return [name for name, feature in features.items() if video.is_video(feature)]


def data_features(features: dict[str, Any]) -> dict[str, Any]:
    """The features held in the data files: all but the videos."""
    return {name: f for name, f in features.items() if not video.is_video(f)}


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


def _load(root: Path) -> _State:
    # Order matters for a reader racing a writer: info.json first (it can only lag),
    # then the episodes-meta files, then tasks.parquet (written before each commit).
    if not root.is_dir():
        raise StoreError(f"{root}: not a directory")
    info = _read_info(root)
    cs = info["chunks_size"]
    files = _numbers(root, EPISODES, cs)
    schema = meta_schema(info["features"])
    tables = [
        _read_parquet(root / _fmt(EPISODES_PATH, number, cs), schema.names, schema)
        for number in files
    ]
    tasks = _read_tasks(root)
    bounds = [(0, 0)]
    for number, table in zip(files, tables, strict=True):
        bounds.append(_check_meta(root / _fmt(EPISODES_PATH, number, cs), table, bounds[-1], tasks))
    meta = pa.concat_tables(tables).combine_chunks() if tables else schema.empty_table()
    names = set(data_features(info["features"]))
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
    for key in video_keys(info["features"]):
        for run in _data_runs(root, meta, key):
            problem = _video_header_problem(run, info["features"][key])
            if problem:
                raise StoreError(f"{run.path}: {problem}")
    stated = (info["total_episodes"], info["total_frames"])
    if stated not in bounds or info["total_tasks"] > len(tasks):
        raise StoreError(
            f"{root / INFO_PATH}: totals {stated} episodes/frames and {info['total_tasks']} tasks "
            f"disagree with the episodes-meta files {bounds[-1]} and {len(tasks)} tasks"
        )
    stale = stated != bounds[-1] or info["total_tasks"] != len(tasks)
    return _State(info, tasks, meta, files, bounds, stale)


def _video_header_problem(run: _Run, feature: dict[str, Any]) -> str | None:
    """What the mp4's header says is wrong with it (a cheap check: nothing is decoded)."""
    if not run.path.is_file():
        return f"missing (holds episodes {run.lo}..{run.hi - 1})"
    try:
        frames, height, width = video.probe(run.path)
    except ValueError as e:
        return str(e)
    want = run.frames[1] - run.frames[0]
    if frames != want:
        return f"has {frames} frames, episodes {run.lo}..{run.hi - 1} span {want}"
    if [height, width] != feature["shape"][:2]:
        return f"frames are {height}x{width}, expected {feature['shape'][0]}x{feature['shape'][1]}"
    return None


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
    for key in video_keys(features):
        problem = video.feature_problem(features[key])
        if problem:
            raise StoreError(f"{path}: feature {key!r}: {problem}")
        if info.get("video_path") != VIDEO_PATH:
            raise StoreError(
                f"{path}: video_path {info.get('video_path')!r}, expected {VIDEO_PATH!r}"
            )
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


def _data_runs(root: Path, meta: pa.Table, video_key: str | None = None) -> list[_Run]:
    """The data files (or `video_key`'s mp4s) in order, each with the meta rows it holds."""
    prefix = "data" if video_key is None else f"videos/{video_key}"
    template = DATA_PATH if video_key is None else VIDEO_PATH
    chunks, files = (
        meta[f"{prefix}/chunk_index"].to_pylist(),
        meta[f"{prefix}/file_index"].to_pylist(),
    )
    keys = list(zip(chunks, files, strict=True))
    lo, hi = meta["dataset_from_index"].to_pylist(), meta["dataset_to_index"].to_pylist()
    runs: list[_Run] = []
    seen: set[Path] = set()
    for row, key in enumerate(keys):
        if row and key == keys[row - 1]:
            runs[-1] = _Run(runs[-1].path, runs[-1].lo, row + 1, (runs[-1].frames[0], hi[row]))
            continue
        path = root / template.format(chunk_index=key[0], file_index=key[1], video_key=video_key)
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


def _check_video_file(run: _Run, state: _State, key: str) -> list[str]:
    """Decode one mp4: its frames and the episodes' timestamps must agree with the meta rows."""
    try:
        frames = video.decode(run.path)
    except ValueError as e:
        return [f"{run.path}: {e}"]
    problems = []
    want = (run.frames[1] - run.frames[0], *state.info["features"][key]["shape"])
    if frames.shape != want:
        problems.append(f"{run.path}: decodes to {frames.shape} frames, expected {want}")
    meta = state.meta.slice(run.lo, run.hi - run.lo)
    ends = np.cumsum(meta["length"].to_numpy()) / state.info["fps"]
    starts = np.r_[0.0, ends[:-1]]
    for name, expected in (("from_timestamp", starts), ("to_timestamp", ends)):
        got = meta[f"videos/{key}/{name}"].to_numpy()
        if not np.allclose(got, expected, rtol=0.0, atol=1e-6):
            problems.append(f"{run.path}: {name} of episodes {run.lo}..{run.hi - 1} disagree")
    return problems


def _data_schema(features: dict[str, dict[str, Any]]) -> pa.Schema:
    fields = []
    for name, feature in data_features(features).items():
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


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or a directory (a directory to make a rename or a new entry in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_fsync_dir = fsync_path


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
