"""The episode store's layout on disk, as LeRobotDataset v3 has it: paths and file naming,
info.json's features, the schemas of the data and episodes-meta files and the conversion of
columns to and from them, the episodes-meta row of one episode and the stats pooled from
those rows; and the errors every part of the store raises.

Nothing here reads or writes a file (`reader.py` and `writer.py` do); `file_numbers` only
lists names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

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
    Episode,
    run_starts,
)
from aloe.datasets import video
from aloe.errors import UsageError

CODEBASE_VERSION = "v3.0"
ALOE_FORMAT = 1
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
LOCK_PATH = "meta/.writer.lock"
CHECKSUMS_PATH = "meta/checksums.json"
CLAIMS = "meta/.claims"  # one flock-held file per seed a live collector is recording
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
# What a store fixes at creation, in the order a mismatch is reported.
LAYOUT = (
    "cameras",
    "state_dim",
    "action_dim",
    "sim_state_dim",
    "fps",
    "video_codec",
    "robot_type",
)


class StoreError(Exception):
    """A store directory is missing, foreign or corrupt; the message names the file."""


class StoreRefused(StoreError, UsageError):
    """A store cannot be made or grown at `root`, a path the user gave: `reason` says why
    and what to do (the message is `<root>: <reason>`)."""

    def __init__(self, root: Path, reason: str) -> None:
        super().__init__(f"{root}: {reason}")
        self.root = root
        self.reason = reason


class StoreExists(StoreRefused):
    """`create` found a store at `root` already (perhaps made a moment ago by another process)."""


class StoreMismatch(StoreRefused):
    """The store at `root` records other columns than the episodes meant for it."""


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


def video_keys(features: dict[str, Any]) -> list[str]:
    return [name for name, feature in features.items() if video.is_video(feature)]


def data_features(features: dict[str, Any]) -> dict[str, Any]:
    """The features held in the data files: all but the videos."""
    return {name: f for name, f in features.items() if not video.is_video(f)}


def meta_schema(features: dict[str, Any]) -> pa.Schema:
    """META_SCHEMA plus LeRobot's `videos/<key>/...` columns for each camera of `features`."""
    fields = [f for key in video_keys(features) for f in video.meta_fields(key)]
    return pa.schema([*META_SCHEMA, *(pa.field(name, type_) for name, type_ in fields)])


def data_schema(features: dict[str, dict[str, Any]]) -> pa.Schema:
    """The arrow schema of a data file: vectors as fixed-size lists, the rest as scalars."""
    fields = []
    for name, feature in data_features(features).items():
        value = _ARROW[feature["dtype"]]
        fields.append(
            (name, pa.list_(value, feature["shape"][0]) if name in VECTOR_COLUMNS else value)
        )
    return pa.schema(fields)


def to_arrow(values: Any, type_: pa.DataType) -> pa.Array:
    """One column of an episode as the arrow array of `type_` (a field of `data_schema`)."""
    if pa.types.is_fixed_size_list(type_):
        flat = np.asarray(values, dtype=type_.value_type.to_pandas_dtype()).reshape(-1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat), type_.list_size)
    if pa.types.is_string(type_):
        strings = ["" if v is None else str(v) for v in np.asarray(values).reshape(-1)]
        return pa.array(strings, pa.string())
    return pa.array(np.asarray(values, dtype=type_.to_pandas_dtype()).reshape(-1))


def to_numpy(column: pa.ChunkedArray, feature: dict[str, Any]) -> np.ndarray:
    """A data file's column as numpy: vectors 2-D, strings as objects."""
    dtype = _NUMPY[feature["dtype"]]
    if pa.types.is_fixed_size_list(column.type):
        array = column.combine_chunks()
        flat = array.flatten().to_numpy(zero_copy_only=False)
        return np.asarray(flat, dtype=dtype).reshape(len(array), feature["shape"][0])
    return np.asarray(column.to_numpy(), dtype=dtype)


def tasks_table(tasks: list[str]) -> pa.Table:
    """tasks.parquet: task_index and task, with the pandas metadata LeRobot reads it by."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": tasks})
    schema = pa.schema([table.schema.field(0), pa.field("task", pa.string())])
    return table.cast(schema).replace_schema_metadata({"pandas": json.dumps(_PANDAS_TASKS)})


def file_name(template: str, number: int, chunks_size: int) -> str:
    """`template` (DATA_PATH, EPISODES_PATH) for file number `number`."""
    return template.format(chunk_index=number // chunks_size, file_index=number % chunks_size)


def file_number(path: Path, chunks_size: int) -> int | None:
    """chunk * chunks_size + file of a `chunk-C/file-F.*` path; None for any other name."""
    match = _FILE_RE.fullmatch(f"{path.parent.name}/{path.name}")
    return int(match[1]) * chunks_size + int(match[2]) if match else None


def file_numbers(root: Path, sub: str, chunks_size: int, tmp: bool = False) -> list[int]:
    """File numbers (chunk * chunks_size + file) of the parquet files under `root/sub`."""
    numbers = []
    for path in (root / sub).glob("chunk-*/file-*"):
        match = _FILE_RE.fullmatch(f"{path.parent.name}/{path.name}")
        if match and (tmp or not match[3]):
            numbers.append(int(match[1]) * chunks_size + int(match[2]))
    return sorted(numbers)


def meta_row(ep: Episode, index: int, start: int, chunk: int, file: int) -> dict[str, Any]:
    """The episodes-meta row (META_SCHEMA) of episode `index`, whose frames begin at `start`."""
    n = len(ep)
    steps = ep.steps
    source = np.asarray(steps[SOURCE]).astype(str).reshape(-1)
    fragment = np.asarray(steps[FRAGMENT]).reshape(-1)
    fragments = source[run_starts(fragment, source)].tolist()
    takeovers = sum(
        a == "policy" and b == "human" for a, b in zip(fragments, fragments[1:], strict=False)
    )
    meta = dict(ep.meta)
    seed = meta.pop("seed", None)
    iteration = meta.pop("iteration", None)
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


def aggregate_stats(meta: pa.Table) -> dict[str, dict[str, list[float]]]:
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


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    raise TypeError(f"episode meta value {obj!r} is not JSON-serialisable")


def layout_mismatch(store: dict[str, Any], mine: dict[str, Any]) -> str | None:
    """`the store records X; this collection records Y` for the first of LAYOUT that differs."""
    for key in LAYOUT:
        if key == "video_codec" and not (store["cameras"] and mine["cameras"]):
            continue  # the codec only matters where there are videos
        if store[key] != mine[key]:
            return f"the store records {_label(key, store[key])}; this collection records " + (
                _label(key, mine[key])
            )
    return None


def _label(key: str, value: Any) -> str:
    return "none" if value in (None, {}) else _LABELS[key](value)


def _cameras(cameras: dict[str, tuple[int, int]]) -> str:
    shapes = set(cameras.values())
    if len(shapes) > 1:
        return "cameras " + ", ".join(f"{c} at {h}x{w} px" for c, (h, w) in cameras.items())
    ((height, width),) = shapes
    size = f"{height}" if height == width else f"{height}x{width}"
    return f"cameras {sorted(cameras)} at {size} px"


_LABELS: dict[str, Callable[[Any], str]] = {
    "cameras": _cameras,
    "state_dim": lambda v: f"state_dim {v}",
    "action_dim": lambda v: f"action_dim {v}",
    "sim_state_dim": lambda v: f"sim.state of {v} values",
    "fps": lambda v: f"{v:g} fps",
    "video_codec": lambda v: f"{v} videos",
    "robot_type": lambda v: f"robot_type {v!r}",
}
