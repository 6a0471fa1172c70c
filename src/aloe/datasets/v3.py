"""Any LeRobotDataset v3 directory, read-only: one written by LeRobot (`LeRobotDataset.create`,
`add_frame`, `save_episode`) or an aloe store, read with pyarrow and PyAV alone, so that
nothing of LeRobot is imported and the format, not LeRobot's version, is the contract.

Nothing here writes, creates or locks a file: files are opened for reading only (the
store's own reader is not used, as its checks are aloe's layout, not LeRobot's). Opening
validates the metadata (info.json, the episodes-meta files, tasks.parquet); reading columns
checks every data file's rows against the episodes-meta rows. A problem is a `V3Error`
naming the file relative to the dataset's root, in one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aloe.datasets import video
from aloe.datasets.layout import (
    CODEBASE_VERSION,
    EPISODES,
    EPISODES_PATH,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    file_name,
    file_numbers,
)
from aloe.datasets.reader import json_object, one_line

_INFO_KEYS = ("fps", "features", "total_episodes", "total_frames", "chunks_size", "data_path")
_META_KEYS = (
    *("episode_index", "length", "dataset_from_index", "dataset_to_index"),
    *("data/chunk_index", "data/file_index"),
)
NUMERIC = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
CONVERT = (
    "python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id local/NAME "
    "--root COPY --push-to-hub false"
)


class V3Error(Exception):
    """The directory is not a readable LeRobotDataset v3: `<file>: <problem>`, one line."""


@dataclass
class V3Dataset:
    """A v3 dataset's metadata, checked at `open`; `columns` reads (and checks) its data
    files, `camera_frames` decodes its videos."""

    root: Path
    info: dict[str, Any]
    tasks: list[str]  # by task_index
    meta: pa.Table  # episodes-meta rows in episode order, without the stats columns
    # the last mp4 decoded of each video feature: an episode's frames are a slice of it
    _decoded: dict[str, tuple[Path, np.ndarray]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, root: Path) -> V3Dataset:
        """The dataset at `root`, its metadata read and checked; V3Error if it is not v3.0."""
        info = read_info(root)
        meta = _read_meta(root, info)
        return cls(root, info, read_task_strings(root), meta)

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return dict(self.info["features"])

    @property
    def num_episodes(self) -> int:
        return int(self.meta.num_rows)

    @property
    def num_frames(self) -> int:
        return int(self.info["total_frames"])

    @property
    def lengths(self) -> np.ndarray:
        return self.meta["length"].to_numpy()

    @property
    def is_aloe_store(self) -> bool:
        return "aloe_format" in self.info

    def stats(self, feature: str) -> dict[str, Any]:
        """meta/stats.json's entry of `feature` (LeRobot's per-feature min, max, mean, std,
        count); empty where the file or the entry is missing or unreadable: the stats are
        optional, and what reads them falls back on the frames."""
        try:
            stats = json.loads((self.root / STATS_PATH).read_text())
        except (OSError, ValueError):
            return {}
        entry = stats.get(feature) if isinstance(stats, dict) else None
        return entry if isinstance(entry, dict) else {}

    def columns(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Every frame of the data columns `names`, in frame order (vectors 2-D, strings as
        objects); checks that each episode's rows are where its meta row says."""
        names = list(dict.fromkeys(["episode_index", "frame_index", *names]))
        tables = [self._read_data(path, names) for path in self._data_files()]
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except pa.ArrowException as e:
            raise V3Error(f"data files disagree on their columns ({one_line(e)})") from None
        if table.num_rows != self.num_frames:
            raise V3Error(
                f"data files hold {table.num_rows} frames, {INFO_PATH} says {self.num_frames}"
            )
        out = {name: _to_numpy(name, table[name]) for name in names}
        lengths = self.lengths
        episode = np.repeat(self.meta["episode_index"].to_numpy(), lengths)
        frame = np.arange(self.num_frames) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        for name, want in (("episode_index", episode), ("frame_index", frame)):
            got = np.asarray(out[name]).reshape(-1)
            if not np.array_equal(got, want):
                row = int(np.flatnonzero(got != want)[0])
                raise V3Error(
                    f"data files: row {row} has {name} {got[row]}, the episodes-meta rows "
                    f"put {name} {want[row]} there"
                )
        return out

    def camera_frames(self, key: str, episodes: Sequence[int]) -> Iterator[np.ndarray]:
        """The frames of the video feature `key` in each of `episodes`, uint8 (n, H, W, 3),
        one mp4 decoded at a time."""
        fps = self.fps
        for e in episodes:
            row = {name: self.meta[f"videos/{key}/{name}"][e].as_py() for name in _VIDEO_META}
            path = self.root / self.info["video_path"].format(
                video_key=key, chunk_index=row["chunk_index"], file_index=row["file_index"]
            )
            if key not in self._decoded or self._decoded[key][0] != path:
                self._decoded[key] = (path, self._decode(path))
            frames = self._decoded[key][1]
            first = round(row["from_timestamp"] * fps)
            n = int(self.lengths[e])
            if first + n > len(frames):
                raise V3Error(
                    f"{self._rel(path)}: has {len(frames)} frames, episode {e} needs "
                    f"{first}..{first + n - 1}"
                )
            yield frames[first : first + n]

    def check_camera(self, key: str) -> None:
        """Every mp4 of `key` the episodes point at exists and its header reads (nothing is
        decoded)."""
        names = self.meta.column_names
        missing = [c for c in (f"videos/{key}/{n}" for n in _VIDEO_META) if c not in names]
        if missing or not self.info.get("video_path"):
            raise V3Error(f"{EPISODES}: no {missing[0] if missing else 'video_path'} for {key}")
        if any(self.meta[f"videos/{key}/{n}"].null_count for n in _VIDEO_META):
            raise V3Error(f"{EPISODES}: an episode has no videos/{key} file or timestamp")
        pairs = zip(
            self.meta[f"videos/{key}/chunk_index"].to_pylist(),
            self.meta[f"videos/{key}/file_index"].to_pylist(),
            strict=True,
        )
        for chunk, file in dict.fromkeys(pairs):
            path = self.root / self.info["video_path"].format(
                video_key=key, chunk_index=chunk, file_index=file
            )
            if not path.is_file():
                raise V3Error(f"{self._rel(path)}: missing")
            try:
                video.probe(path)
            except ValueError as e:
                raise V3Error(f"{self._rel(path)}: {e}") from None

    def _decode(self, path: Path) -> np.ndarray:
        try:
            return video.decode(path)
        except ValueError as e:
            raise V3Error(f"{self._rel(path)}: {e}") from None

    def _data_files(self) -> list[Path]:
        pairs = zip(
            self.meta["data/chunk_index"].to_pylist(),
            self.meta["data/file_index"].to_pylist(),
            strict=True,
        )
        template = self.info["data_path"]
        return [
            self.root / template.format(chunk_index=c, file_index=f)
            for c, f in dict.fromkeys(pairs)
        ]

    def _read_data(self, path: Path, names: list[str]) -> pa.Table:
        if not path.is_file():
            raise V3Error(f"{self._rel(path)}: missing (the episodes-meta rows point at it)")
        try:
            with pq.ParquetFile(path) as file:
                missing = [n for n in names if n not in file.schema_arrow.names]
                if missing:
                    raise V3Error(f"{self._rel(path)}: no column {missing[0]!r}")
                return file.read(columns=names, use_threads=False)
        except (OSError, pa.ArrowException) as e:
            raise V3Error(f"{self._rel(path)}: unreadable parquet ({one_line(e)})") from None

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))


_VIDEO_META = ("chunk_index", "file_index", "from_timestamp")


def read_info(root: Path) -> dict[str, Any]:
    """meta/info.json, checked to be a v3.0 dataset's."""
    path = root / INFO_PATH
    if not path.is_file():
        raise V3Error(f"no {INFO_PATH}: not a LeRobotDataset v3 directory")
    info = json_object(path, INFO_PATH, V3Error)
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        raise V3Error(
            f"{INFO_PATH}: codebase_version {version!r}; aloe reads LeRobotDataset "
            f"{CODEBASE_VERSION!r} only; convert a copy of it (LeRobot's script rewrites in "
            f"place): {CONVERT}"
        )
    for key in _INFO_KEYS:
        if key not in info:
            raise V3Error(f"{INFO_PATH}: missing key {key!r}")
    counts = [info[k] for k in ("total_episodes", "total_frames", "chunks_size")]
    if not all(isinstance(n, int) and n >= 0 for n in counts) or info["chunks_size"] == 0:
        raise V3Error(f"{INFO_PATH}: total_episodes, total_frames and chunks_size must be counts")
    fps = info["fps"]
    if not isinstance(fps, int | float) or isinstance(fps, bool) or not fps > 0:
        raise V3Error(f"{INFO_PATH}: fps {fps!r} is not a positive number")
    features = info["features"]
    if not isinstance(features, dict) or not all(isinstance(f, dict) for f in features.values()):
        raise V3Error(f"{INFO_PATH}: features is not an object of objects")
    return info


def read_task_strings(root: Path) -> list[str]:
    """tasks.parquet's strings by task_index: aloe's `task` column, or LeRobot's pandas index
    (the strings are the frame's index, `__index_level_0__`)."""
    path = root / TASKS_PATH
    if not path.is_file():
        raise V3Error(f"{TASKS_PATH}: missing")
    try:
        with pq.ParquetFile(path) as file:
            schema = file.schema_arrow
            table = file.read(use_threads=False)
    except (OSError, pa.ArrowException) as e:
        raise V3Error(f"{TASKS_PATH}: unreadable parquet ({one_line(e)})") from None
    try:
        pandas = json.loads((schema.metadata or {}).get(b"pandas", b"{}"))
    except ValueError:
        pandas = {}
    index = [c for c in pandas.get("index_columns", []) if isinstance(c, str)]
    column = "task" if "task" in schema.names else (index[0] if index else None)
    if column is None or "task_index" not in schema.names:
        raise V3Error(f"{TASKS_PATH}: no task_index and task columns")
    order = np.argsort(table["task_index"].to_numpy())
    strings = [str(t) for t in np.asarray(table[column].to_pylist(), dtype=object)[order]]
    if sorted(table["task_index"].to_pylist()) != list(range(len(strings))):
        raise V3Error(f"{TASKS_PATH}: task_index is not 0..{len(strings) - 1}")
    return strings


def _read_meta(root: Path, info: dict[str, Any]) -> pa.Table:
    """Every episodes-meta row, stats left out; checked to number the episodes 0..E-1 and
    their frames contiguously from 0, as info.json counts them."""
    numbers = file_numbers(root, EPISODES, info["chunks_size"])
    tables = []
    for number in numbers:
        rel = file_name(EPISODES_PATH, number, info["chunks_size"])
        try:
            with pq.ParquetFile(root / rel) as file:
                names = [n for n in file.schema_arrow.names if not n.startswith("stats/")]
                missing = [k for k in _META_KEYS if k not in names]
                if missing:
                    raise V3Error(f"{rel}: no column {missing[0]!r}")
                tables.append(file.read(columns=names, use_threads=False))
        except (OSError, pa.ArrowException) as e:
            raise V3Error(f"{rel}: unreadable parquet ({one_line(e)})") from None
    if not tables:
        raise V3Error(f"{EPISODES}: no episodes-meta file (no episode)")
    try:
        meta = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    except pa.ArrowException as e:
        raise V3Error(f"{EPISODES}: files disagree on their columns ({one_line(e)})") from None
    _check_meta(meta, info)
    return meta


def _check_meta(meta: pa.Table, info: dict[str, Any]) -> None:
    episodes = meta["episode_index"].to_pylist()
    if episodes != list(range(len(episodes))) or len(episodes) != info["total_episodes"]:
        raise V3Error(
            f"{EPISODES}: episode_index is not 0..{info['total_episodes'] - 1} in order "
            f"({INFO_PATH} counts {info['total_episodes']} episodes)"
        )
    lengths = meta["length"].to_pylist()
    if not all(isinstance(n, int) and n > 0 for n in lengths):
        raise V3Error(f"{EPISODES}: a length is not a positive count of frames")
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]]
    bounds = zip(
        lengths,
        starts,
        meta["dataset_from_index"].to_pylist(),
        meta["dataset_to_index"].to_pylist(),
        strict=True,
    )
    for e, (n, start, lo, hi) in enumerate(bounds):
        if (lo, hi) != (start, start + n):
            raise V3Error(
                f"{EPISODES}: episode {e} spans frames [{lo}, {hi}) of length {n}, "
                f"not [{start}, {start + n})"
            )
    if ends[-1] != info["total_frames"]:
        raise V3Error(
            f"{EPISODES}: episodes hold {ends[-1]} frames, {INFO_PATH} says {info['total_frames']}"
        )


def _to_numpy(name: str, column: pa.ChunkedArray) -> np.ndarray:
    """A data column as numpy: a list column (fixed or not) of equal lengths as (n, d)."""
    array = column.combine_chunks()
    if array.null_count:
        raise V3Error(f"data files: column {name!r} has missing values")
    if pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type):
        widths = set(pc.list_value_length(array).to_pylist())
        if len(widths) > 1:
            raise V3Error(f"data files: column {name!r} has rows of unequal lengths")
        flat = array.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(array), widths.pop() if widths else 0)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return np.asarray(array.to_pylist(), dtype=object)
    return array.to_numpy(zero_copy_only=False)
