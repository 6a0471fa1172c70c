"""Reading an episode store: opening it (which validates the metadata and every file's
footer or header, cheaply), and reading its frames and videos back.

Readers take no lock. `load_state` reads info.json first (it can only lag the commits), then
the episodes-meta files, then tasks.parquet (written before each commit), so a reader racing
a writer sees a consistent store as of some commit. The full check, which reads every row,
is in `check.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aloe.data import ACTION, SIM_STATE, STATE
from aloe.datasets import video
from aloe.datasets.layout import (
    ALOE_FORMAT,
    CODEBASE_VERSION,
    DATA_PATH,
    EPISODES,
    EPISODES_PATH,
    INFO_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    StoreError,
    data_features,
    data_schema,
    file_name,
    file_numbers,
    make_features,
    meta_schema,
    to_numpy,
    video_keys,
)
from aloe.datasets.video import VideoFile

_INFO_KEYS = ("fps", "features", "chunks_size", "data_path")
_TOTALS = ("total_episodes", "total_frames", "total_tasks")


@dataclass
class StoreState:
    """What a reader knows of a store: its metadata as of the last commit it saw."""

    info: dict[str, Any]
    tasks: list[str]
    meta: pa.Table  # every committed episodes-meta row, in episode order
    files: list[int]  # file numbers of the committed episodes-meta files, in order
    bounds: list[tuple[int, int]]  # (episodes, frames) after 0, 1, ... of those files
    stale: bool  # info.json lags the episodes-meta files (a crash after a commit)


@dataclass(frozen=True)
class DataRun:
    """One data file and the contiguous block of episodes-meta rows that point at it."""

    path: Path
    lo: int  # first meta row
    hi: int  # one past the last meta row
    frames: tuple[int, int]  # global frame range [from, to)


def load_state(root: Path) -> StoreState:
    """Read and validate the store's metadata and its files' footers; StoreError if corrupt."""
    if not root.is_dir():
        raise StoreError(f"{root}: not a directory")
    info = _read_info(root)
    cs = info["chunks_size"]
    files = file_numbers(root, EPISODES, cs)
    schema = meta_schema(info["features"])
    tables = [
        read_parquet(root / file_name(EPISODES_PATH, number, cs), schema.names, schema)
        for number in files
    ]
    tasks = read_tasks(root)
    bounds = [(0, 0)]
    for k, (number, table) in enumerate(zip(files, tables, strict=True)):
        if table.num_rows and table["episode_index"][0].as_py() != bounds[-1][0]:
            _blame_lost_meta(root, cs, range(files[k - 1] + 1 if k else 0, number), bounds[-1][0])
        path = root / file_name(EPISODES_PATH, number, cs)
        bounds.append(_check_meta(path, table, bounds[-1], tasks))
    meta = pa.concat_tables(tables).combine_chunks() if tables else schema.empty_table()
    _check_footers(root, info, meta)
    stated = (info["total_episodes"], info["total_frames"])
    if stated[0] > bounds[-1][0]:  # info.json counts episodes no episodes-meta file holds
        last_data = max(file_numbers(root, "data", cs), default=-1)
        lost = range(files[-1] + 1 if files else 0, 1 + last_data)
        _blame_lost_meta(root, cs, lost, bounds[-1][0])
    if stated not in bounds or info["total_tasks"] > len(tasks):
        raise StoreError(
            f"{root / INFO_PATH}: totals {stated} episodes/frames and {info['total_tasks']} tasks "
            f"disagree with the episodes-meta files {bounds[-1]} and {len(tasks)} tasks"
        )
    stale = stated != bounds[-1] or info["total_tasks"] != len(tasks)
    return StoreState(info, tasks, meta, files, bounds, stale)


def refresh(root: Path, state: StoreState) -> None:
    """Catch up, in place, with appends another writer committed since `state` was read."""
    if file_numbers(root, EPISODES, state.info["chunks_size"]) != state.files:
        vars(state).update(vars(load_state(root)))
    else:
        state.tasks = read_tasks(root)


def _check_footers(root: Path, info: dict[str, Any], meta: pa.Table) -> None:
    """Every data file and mp4 the meta rows point at exists and holds their frames."""
    names = set(data_features(info["features"]))
    for run in data_runs(root, meta):
        if not run.path.is_file():
            raise StoreError(f"{run.path}: missing (holds episodes {run.lo}..{run.hi - 1})")
        try:
            footer = pq.read_metadata(run.path)
        except (OSError, pa.ArrowException) as e:
            raise StoreError(f"{run.path}: unreadable parquet ({one_line(e)})") from None
        if footer.num_rows != run.frames[1] - run.frames[0]:
            raise StoreError(
                f"{run.path}: has {footer.num_rows} rows, episodes {run.lo}..{run.hi - 1} "
                f"span frames [{run.frames[0]}, {run.frames[1]})"
            )
        missing = sorted(names - set(footer.schema.to_arrow_schema().names))
        if missing:
            raise StoreError(f"{run.path}: missing column {missing[0]!r}")
    for key in video_keys(info["features"]):
        for run in data_runs(root, meta, key):
            problem = _video_header_problem(run, info["features"][key])
            if problem:
                raise StoreError(f"{run.path}: {problem}")


def _blame_lost_meta(root: Path, cs: int, numbers: range, start: int) -> None:
    """Name the deleted episodes-meta file behind a gap in the episodes: the first of
    `numbers` (file numbers with no episodes-meta file) whose data file is still there."""
    for number in numbers:
        data = file_name(DATA_PATH, number, cs)
        if (root / data).is_file():
            raise StoreError(
                f"{root / file_name(EPISODES_PATH, number, cs)}: missing (episodes from {start} "
                f"on are in {data} but in no episodes-meta file)"
            )


def _video_header_problem(run: DataRun, feature: dict[str, Any]) -> str | None:
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
    info = json_object(path, str(path), StoreError)
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
    _check_features(path, info)
    return info


def json_object(path: Path, name: str, error: type[Exception]) -> dict[str, Any]:
    """The JSON object in `path`, or `error("<name>: <what is wrong>")`."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise error(f"{name}: unreadable JSON ({one_line(e)})") from None
    if not isinstance(obj, dict):
        raise error(f"{name}: not a JSON object")
    return obj


def _check_features(path: Path, info: dict[str, Any]) -> None:
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


def _dim(features: Any, name: str) -> int | None:
    try:
        dim = features[name]["shape"][0]
    except (KeyError, TypeError, IndexError):
        return None
    return dim if isinstance(dim, int) and dim > 0 else None


def read_tasks(root: Path) -> list[str]:
    """tasks.parquet's instruction strings, indexed by task_index."""
    path = root / TASKS_PATH
    table = read_parquet(path, ["task_index", "task"])
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
    starts = table["dataset_from_index"].to_pylist()
    ends = table["dataset_to_index"].to_pylist()
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


def data_runs(root: Path, meta: pa.Table, video_key: str | None = None) -> list[DataRun]:
    """The data files (or `video_key`'s mp4s) in order, each with the meta rows it holds."""
    prefix = "data" if video_key is None else f"videos/{video_key}"
    template = DATA_PATH if video_key is None else VIDEO_PATH
    chunks, files = (
        meta[f"{prefix}/chunk_index"].to_pylist(),
        meta[f"{prefix}/file_index"].to_pylist(),
    )
    keys = list(zip(chunks, files, strict=True))
    lo = meta["dataset_from_index"].to_pylist()
    hi = meta["dataset_to_index"].to_pylist()
    runs: list[DataRun] = []
    seen: set[Path] = set()
    for row, key in enumerate(keys):
        if row and key == keys[row - 1]:
            last = runs[-1]
            runs[-1] = DataRun(last.path, last.lo, row + 1, (last.frames[0], hi[row]))
            continue
        path = root / template.format(chunk_index=key[0], file_index=key[1], video_key=video_key)
        if path in seen:
            raise StoreError(f"{path}: its episodes are not contiguous in the episodes-meta files")
        seen.add(path)
        runs.append(DataRun(path, row, row + 1, (lo[row], hi[row])))
    return runs


def read_parquet(path: Path, columns: Sequence[str], schema: pa.Schema | None = None) -> pa.Table:
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
        raise StoreError(f"{path}: unreadable parquet ({one_line(e)})") from None
    if schema is None or table.schema.equals(schema):
        return table
    try:
        return table.cast(schema)
    except (pa.ArrowException, ValueError) as e:
        raise StoreError(f"{path}: unexpected column types ({one_line(e)})") from None


def read_frames(
    root: Path, state: StoreState, columns: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Every committed frame of `columns` (default: all data columns) in global index order."""
    features = state.info["features"]
    known = data_features(features)
    names = list(known) if columns is None else list(columns)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise KeyError(f"{root}: no column(s) {unknown}; columns: {list(known)}")
    schema = pa.schema([data_schema(features).field(name) for name in names])
    tables = [read_parquet(run.path, names, schema) for run in data_runs(root, state.meta)]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return {name: to_numpy(table[name], features[name]) for name in names}


def video_files(root: Path, state: StoreState, key: str) -> list[VideoFile]:
    """The committed mp4s of the video feature `key`, in order."""
    files = []
    for run in data_runs(root, state.meta, key):
        file_id = f"{run.path.parent.name}/{run.path.stem}"
        files.append(VideoFile(file_id, run.path, np.arange(*run.frames, dtype=np.int64)))
    return files


def decode_video(file: VideoFile, shape: tuple[int, int]) -> np.ndarray:
    """The frames of one committed mp4, uint8 (n, H, W, 3); StoreError if they are not
    `len(file.index)` images of (height, width) `shape`."""
    try:
        frames = video.decode(file.path)
    except ValueError as e:
        raise StoreError(f"{file.path}: {e}") from None
    want = (len(file.index), *shape, 3)
    if frames.shape != want:
        raise StoreError(f"{file.path}: decodes to {frames.shape} frames, expected {want}")
    return frames


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
