"""Writing an episode store: creating it, appending episodes, and cleaning up after a crash.

Each `append` writes one new data file, one new mp4 per camera (videos/, if the store has
cameras), then one new episodes-meta file, all with the same file number; the episodes-meta
file is the commit point. Every file is written as `<name>.tmp`, fsync'd, renamed and its
directory fsync'd (`aloe.durable`), so a kill at any moment loses at most the append in
flight: a data or video file numbered past the last episodes-meta file, or a `*.tmp`, was
never committed; readers ignore it, `check` reports it and the next append removes it.
`tasks.parquet` only grows and is written before the commit; `stats.json` and `info.json`
are derived from the episodes-meta rows and rewritten after it, so a crash in between
leaves them behind, which `open` recognises and the next writer repairs. Nothing committed
is rewritten. Every committed file's sha256 is in `meta/checksums.json`, written (atomically)
before and after the append's files: first a pending map that accepts each file's old and
new bytes, last the settled one (`checksums.py` gives the argument). One writer at a time
(an flock on `meta/.writer.lock`); readers take no lock and see the store as it was at
`open`, except `check`, which shares the lock to hash files no append is rewriting. A new
store is built aside and renamed into place: of concurrent creators one wins, and
`open_or_create` in the others grows the winner's store.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aloe.data import Episode, image_key
from aloe.datasets import checksums, video
from aloe.datasets.layout import (
    ALOE_FORMAT,
    CHECKSUMS_PATH,
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_PATH,
    EPISODES,
    EPISODES_PATH,
    INDEX_COLUMNS,
    INFO_PATH,
    LOCK_PATH,
    STATS_PATH,
    TASKS_PATH,
    VECTOR_COLUMNS,
    VIDEO_PATH,
    StoreExists,
    StoreRefused,
    aggregate_stats,
    data_schema,
    file_name,
    file_number,
    file_numbers,
    make_features,
    meta_row,
    meta_schema,
    tasks_table,
    to_arrow,
    video_keys,
)
from aloe.datasets.reader import StoreState, refresh
from aloe.durable import ensure_dir, fsync_path, write_atomic
from aloe.errors import UsageError

# Kernel file systems: writable-looking to root, but they hold no ordinary files.
_SPECIAL = ("/proc", "/sys")
# What a crashed write leaves: the `<name>.tmp` of a file it never renamed into place.
_TMP_PATTERNS = (
    "meta/*.tmp",
    "meta/episodes/chunk-*/*.tmp",
    "data/chunk-*/*.tmp",
    "videos/*/chunk-*/*.tmp",
)


def location_problem(root: Path) -> str | None:
    """Why no store can be created at `root` or an existing one grown there; None if it can.

    Asked before anything is written, so a refusal leaves the file system unchanged."""
    for i, part in enumerate(root.parts):
        if part == ".." and not Path(*root.parts[:i]).is_dir():
            return (
                f"{Path(*root.parts[:i])} does not exist, so the '..' after it cannot be "
                "followed; give a path without '..'"
            )
    ancestor = _existing_ancestor(root)
    special = [s for s in _SPECIAL if ancestor.resolve().is_relative_to(s)]
    if special:
        return f"is under {special[0]}, which holds no ordinary files; give another directory"
    if root.exists() and not root.is_dir():
        return "is a file; give a directory"
    if ancestor != root and not ancestor.is_dir():
        return f"{ancestor} is a file; give a path under a directory"
    target = root if root.is_dir() else ancestor
    if (root / INFO_PATH).is_file():
        target = root / "meta"
    elif root.is_dir():
        try:
            empty = not any(root.iterdir())
        except OSError as e:
            return f"cannot be read ({e.strerror}); give another directory"
        if not empty:
            return "is not empty and not an aloe store; give a new or empty directory"
    if not os.access(target, os.W_OK | os.X_OK):
        return f"cannot write in {target}; give a writable directory"
    return None


def _existing_ancestor(path: Path) -> Path:
    """`path` itself if it exists, else its nearest parent that does."""
    path = Path(os.path.abspath(path)) if not path.exists() else path
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def create_store(
    root: Path,
    *,
    fps: float,
    state_dim: int,
    action_dim: int,
    robot_type: str,
    sim_state_dim: int | None,
    cameras: Mapping[str, tuple[int, int]] | None,
    video_codec: str,
) -> None:
    """Make an empty store at `root` (`EpisodeStore.create` documents the arguments)."""
    if (root / INFO_PATH).exists():
        raise StoreExists(root, "is an aloe store already; refusing to create a store there")
    problem = location_problem(root)
    if problem:
        raise StoreRefused(root, problem)
    if fps <= 0 or state_dim <= 0 or action_dim <= 0 or (sim_state_dim or 1) <= 0:
        raise UsageError(f"{root}: fps and dims must be positive")
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
    _build_and_rename(root, info)


def _build_and_rename(root: Path, info: dict[str, Any]) -> None:
    """Build an empty store aside and rename it to `root`, so a crash never leaves a half-made
    store; the build directory is removed whatever happens. Of concurrent creators, the
    first rename wins and the others raise StoreExists."""
    absolute = Path(os.path.abspath(root))
    ensure_dir(absolute.parent)
    staging = absolute.with_name(f".{absolute.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        staging.mkdir()
        ensure_dir(staging / "meta" / "episodes")
        ensure_dir(staging / "data")
        files = {TASKS_PATH: _parquet_bytes(tasks_table([]))}
        files |= {STATS_PATH: _json_bytes({}), INFO_PATH: _json_bytes(info)}
        for rel, data in files.items():
            write_bytes(staging / rel, data)
        sums = {rel: [checksums.sha256_bytes(data)] for rel, data in files.items()}
        write_bytes(staging / CHECKSUMS_PATH, checksums.encode(sums))
        try:
            os.replace(staging, absolute)  # onto a missing or empty directory only
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (root / INFO_PATH).exists():
                raise StoreRefused(root, f"cannot be created ({e.strerror})") from None
            raise StoreExists(root, "was made by another process meanwhile") from None
        fsync_path(absolute.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def append(root: Path, state: StoreState, eps: list[Episode]) -> list[int]:
    """Commit `eps` as one new data file, bring `state` up to date; return their indices."""
    for k, ep in enumerate(eps):
        check_episode(root, state.info["features"], ep, k)
    if not eps:
        return []
    with writer_lock(root):
        refresh(root, state)
        sums = _settled_sums(root, state)
        features = state.info["features"]
        cs = state.info["chunks_size"]
        # Past every file number on disk, uncommitted ones too: an orphan is never reused.
        folders = ["data", EPISODES, *(f"videos/{k}" for k in video_keys(features))]
        taken = [n for folder in folders for n in file_numbers(root, folder, cs, True)]
        number = 1 + max(taken, default=-1)
        _remove_uncommitted(root, state)
        tasks = list(state.tasks)
        tasks += [t for t in dict.fromkeys(ep.instruction for ep in eps) if t not in tasks]
        first_ep, first_frame = state.bounds[-1]
        data, meta = _episode_tables(state.info, eps, tasks, number, first_ep, first_frame)
        files: dict[str, bytes] = {}  # written in this order; the episodes-meta file commits
        if len(tasks) > len(state.tasks):
            files[TASKS_PATH] = _parquet_bytes(tasks_table(tasks))
        files[file_name(DATA_PATH, number, cs)] = _parquet_bytes(data)
        files |= _video_bytes(state.info, eps, number)
        files[file_name(EPISODES_PATH, number, cs)] = _parquet_bytes(meta)
        after = StoreState(
            info=state.info,
            tasks=tasks,
            meta=pa.concat_tables([state.meta, meta]).combine_chunks(),
            files=[*state.files, number],
            bounds=[*state.bounds, (first_ep + len(eps), first_frame + data.num_rows)],
            stale=True,
        )
        files |= _summary_bytes(after)
        _write_files(root, sums, files)
        after.info, after.stale = json.loads(files[INFO_PATH]), False
        vars(state).update(vars(after))
    return list(range(first_ep, first_ep + len(eps)))


def repair(root: Path, state: StoreState) -> None:
    """Rewrite stats.json and info.json that a crash after a commit left behind, and settle
    the checksum map a crash left pending."""
    with writer_lock(root):
        refresh(root, state)
        sums = checksums.read(root)
        summaries = _summary_bytes(state)
        if sums is None:  # written before checksums: its next append records them
            for rel, data in summaries.items():
                write_bytes(root / rel, data)
        else:
            _write_files(root, checksums.settle(root, state, sums), summaries)
        state.info, state.stale = json.loads(summaries[INFO_PATH]), False


def _settled_sums(root: Path, state: StoreState) -> checksums.Sums:
    """The store's settled checksum map (StoreError if its meta files are corrupt); a store
    written before checksums gets one of its files as they are."""
    sums = checksums.read(root)
    return checksums.fresh(root, state) if sums is None else checksums.settle(root, state, sums)


def _write_files(root: Path, sums: checksums.Sums, files: dict[str, bytes]) -> None:
    """Write `files` (relative path -> bytes) in order, each atomically, between a pending
    checksum map that accepts each file's old and new bytes and the settled one that
    accepts only the new: a kill at any point leaves every file matching its map."""
    new = {rel: checksums.sha256_bytes(data) for rel, data in files.items()}
    write_bytes(root / CHECKSUMS_PATH, checksums.encode(checksums.pending(sums, new)))
    for rel, data in files.items():
        write_bytes(root / rel, data)
    write_bytes(root / CHECKSUMS_PATH, checksums.encode(sums | {k: [v] for k, v in new.items()}))


def check_episode(root: Path, features: dict[str, Any], ep: Episode, k: int) -> None:
    """ValueError naming episode `k` if it lacks a column of `features` or has the wrong shape."""
    try:
        ep.validate()
    except ValueError as e:
        raise ValueError(f"episode {k}: {e}") from None
    n = len(ep)
    extra = sorted(set(ep.steps) - set(features))
    if extra:
        raise ValueError(f"episode {k}: column(s) {extra} are not features of {root}")
    for name, feature in features.items():
        if video.is_video(feature):
            _check_images(root, ep, k, name, feature)
            continue
        if name in INDEX_COLUMNS:
            continue
        if name not in ep.steps:
            raise ValueError(f"episode {k}: column {name!r} is missing; {root} has it")
        shape = np.shape(ep.steps[name])
        want = [(n, feature["shape"][0])] if name in VECTOR_COLUMNS else [(n,), (n, 1)]
        if shape not in want:
            raise ValueError(
                f"episode {k}: column {name!r} has shape {shape}, {root} expects {want[0]}"
            )


def _check_images(root: Path, ep: Episode, k: int, key: str, feature: dict[str, Any]) -> None:
    want = (len(ep), *feature["shape"])
    images = ep.steps.get(key)
    if images is None:
        raise ValueError(f"episode {k}: column {key!r} is missing; {root} has it")
    if images.shape != want or images.dtype != np.uint8:
        raise ValueError(
            f"episode {k}: column {key!r} is {images.dtype} {images.shape}, "
            f"{root} expects uint8 {want}"
        )


def _episode_tables(
    info: dict[str, Any],
    eps: list[Episode],
    tasks: list[str],
    number: int,
    first_ep: int,
    first_frame: int,
) -> tuple[pa.Table, pa.Table]:
    """The data table and the episodes-meta table of file `number`."""
    features = info["features"]
    fps = float(info["fps"])
    schema = data_schema(features)
    cs = info["chunks_size"]
    start = first_frame
    data = []
    rows = []
    for index, ep in enumerate(eps, start=first_ep):
        frame = np.arange(len(ep))
        columns = {
            **ep.steps,
            "timestamp": frame / fps,
            "frame_index": frame,
            "episode_index": np.full(len(ep), index),
            "index": first_frame + frame,
            "task_index": np.full(len(ep), tasks.index(ep.instruction)),
        }
        arrays = [to_arrow(columns[f.name], f.type) for f in schema]
        data.append(pa.Table.from_arrays(arrays, schema=schema))
        row = meta_row(ep, index, first_frame, number // cs, number % cs)
        offset = (first_frame - start) / fps  # where the episode begins in the mp4s
        for key in video_keys(features):
            row[f"videos/{key}/chunk_index"] = number // cs
            row[f"videos/{key}/file_index"] = number % cs
            row[f"videos/{key}/from_timestamp"] = offset
            row[f"videos/{key}/to_timestamp"] = offset + len(ep) / fps
        rows.append(row)
        first_frame += len(ep)
    meta = pa.Table.from_pylist(rows, schema=meta_schema(features))
    return pa.concat_tables(data), meta


def _video_bytes(info: dict[str, Any], eps: list[Episode], number: int) -> dict[str, bytes]:
    """File `number`'s mp4 of each camera, by relative path."""
    features = info["features"]
    cs = info["chunks_size"]
    fps = float(info["fps"])
    keys = video_keys(features)
    codec = video.codec_of(features[keys[0]]) if keys else None
    out = {}
    for key in keys:
        assert codec is not None
        frames = np.concatenate([ep.steps[key] for ep in eps])
        buffer = io.BytesIO()
        video.encode(buffer, frames=frames, fps=fps, codec=codec)
        rel = VIDEO_PATH.format(video_key=key, chunk_index=number // cs, file_index=number % cs)
        out[rel] = buffer.getvalue()
    return out


def _remove_uncommitted(root: Path, state: StoreState) -> None:
    """Delete what crashed appends left: `*.tmp` files, and data and video files numbered
    past the last commit. No reader looks at them, and no append writes them while this
    one holds the lock."""
    for pattern in _TMP_PATTERNS:
        for tmp in root.glob(pattern):
            tmp.unlink(missing_ok=True)
    cs = state.info["chunks_size"]
    last = max(state.files, default=-1)
    for pattern in ("data/chunk-*/file-*.parquet", "videos/*/chunk-*/file-*.mp4"):
        for path in root.glob(pattern):
            number = file_number(path, cs)
            if number is not None and number > last:
                path.unlink(missing_ok=True)


def _summary_bytes(state: StoreState) -> dict[str, bytes]:
    """stats.json and info.json as the committed episodes-meta rows of `state` make them."""
    episodes, frames = state.bounds[-1]
    info = state.info | {"total_episodes": episodes, "total_frames": frames}
    info |= {"total_tasks": len(state.tasks), "splits": {"train": f"0:{episodes}"}}
    return {STATS_PATH: _json_bytes(aggregate_stats(state.meta)), INFO_PATH: _json_bytes(info)}


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2).encode()


def write_bytes(path: Path, data: bytes) -> None:
    """Every file of the store is written through here: `<name>.tmp`, fsync, rename."""
    write_atomic(path, lambda f: f.write(data))


@contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """The one writer's lock: an exclusive flock on `meta/.writer.lock`, released when the
    block ends or the process dies."""
    fd = os.open(root / LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def shared_lock(root: Path) -> Iterator[None]:
    """Hold off writers (not other readers) while a reader hashes the store's files; a store
    this process cannot write (a read-only copy) is read without the lock."""
    try:
        fd = os.open(root / LOCK_PATH, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
