"""`EpisodeStore.check`: the full validation, reading every file a reader would.

Opening a store checks only metadata and footers (cheap, done by every reader); this reads
every row and decodes every video, compares every committed file's sha256 with
`meta/checksums.json`, and reports files no episode references.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aloe.data import SIM_STATE, SOURCE, SOURCES, STATE, SUCCESS
from aloe.datasets import checksums, video
from aloe.datasets.layout import (
    CHECKSUMS_PATH,
    STATS_COLUMNS,
    STATS_PATH,
    StoreError,
    data_schema,
    file_number,
    to_numpy,
    video_keys,
)
from aloe.datasets.reader import DataRun, StoreState, data_runs, load_state, one_line
from aloe.datasets.writer import shared_lock


def check_store(root: Path, fast: bool = False) -> list[str]:
    """Every problem found, one line each naming its file; an empty list means healthy.

    Each committed file's sha256 is compared with `meta/checksums.json` unless `fast` (a
    store written before checksums has none to compare with: `has_checksums`)."""
    with shared_lock(root):
        try:
            state = load_state(root)
        except StoreError as e:  # name the corrupt files too, if the map can tell
            return ([] if fast else _listed_problems(root)) + [str(e)]
        problems = [] if fast else _checksum_problems(root, state)
        for run in data_runs(root, state.meta):
            problems += _check_data_file(run, state)
        for key in video_keys(state.info["features"]):
            for run in data_runs(root, state.meta, key):
                problems += _check_video_file(run, state, key)
        problems += orphans(root, state)
        try:
            stats = json.loads((root / STATS_PATH).read_text())
        except (OSError, ValueError) as e:
            return [*problems, f"{root / STATS_PATH}: unreadable ({one_line(e)})"]
    frames = state.bounds[-1][1]
    count = stats.get(STATE, {}).get("count") if isinstance(stats, dict) else None
    if not state.stale and frames and count != [frames]:
        problems.append(f"{root / STATS_PATH}: counts disagree with {frames} frames")
    return problems


def verify_checksums(root: Path) -> list[str]:
    """Only the sha256 comparison of `check_store` (no decoding): what `train --resume`
    asks of a run's store before it goes on. A store too damaged to open gives the files
    its map names as corrupt, then why it does not open."""
    with shared_lock(root):
        try:
            state = load_state(root)
        except StoreError as e:
            return [*_listed_problems(root), str(e)]
        return _checksum_problems(root, state)


def has_checksums(root: Path) -> bool:
    return (root / CHECKSUMS_PATH).is_file()


def _listed_problems(root: Path) -> list[str]:
    """Files of the checksum map whose bytes match none of their digests (for a store too
    damaged to open, whose committed files cannot be listed); absent files are passed over."""
    try:
        sums = checksums.read(root)
    except StoreError as e:
        return [str(e)]
    present = [rel for rel in sorted(sums or {}) if (root / rel).is_file()]
    return [] if sums is None else checksums.verify(root, sums, present)


def _checksum_problems(root: Path, state: StoreState) -> list[str]:
    try:
        sums = checksums.read(root)
    except StoreError as e:
        return [str(e)]
    return [] if sums is None else checksums.verify(root, sums, checksums.committed(root, state))


def orphans(root: Path, state: StoreState) -> list[str]:
    """Data and video files that no episodes-meta row points at.

    One numbered past the last commit was left by an append that never committed (a crash),
    and the next append removes it; one before it is foreign, or lost its episodes-meta file.
    """
    referenced = {run.path for run in data_runs(root, state.meta)}
    for key in video_keys(state.info["features"]):
        referenced |= {run.path for run in data_runs(root, state.meta, key)}
    found = [*root.glob("data/chunk-*/file-*.parquet"), *root.glob("videos/*/chunk-*/file-*.mp4")]
    last = max(state.files, default=-1)
    problems = []
    for path in sorted(set(found) - referenced):
        number = file_number(path, state.info["chunks_size"])
        why = (
            "an append that never committed left it; the next append removes it"
            if number is not None and number > last
            else "delete it, or restore the episodes-meta file that pointed at it"
        )
        problems.append(f"{path}: orphan: no episode references it ({why})")
    return problems


def _check_data_file(run: DataRun, state: StoreState) -> list[str]:
    try:
        table = pq.read_table(run.path)
    except (OSError, pa.ArrowException) as e:
        return [f"{run.path}: unreadable parquet ({one_line(e)})"]
    features = state.info["features"]
    wrong = [
        f"{run.path}: column {f.name!r} is {table.schema.field(f.name).type}, expected {f.type}"
        for f in data_schema(features)
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
        if not np.array_equal(to_numpy(table[name], features[name]), want)
    ]
    source = to_numpy(table[SOURCE], features[SOURCE])
    starts = np.r_[0, np.cumsum(length)[:-1]]
    ends = np.cumsum(length) - 1
    for s in SOURCES:
        if np.add.reduceat(source == s, starts).tolist() != meta[f"{s}_steps"].to_pylist():
            problems.append(f"{run.path}: {s} step counts disagree with the episodes-meta rows")
    if to_numpy(table[SUCCESS], features[SUCCESS])[ends].tolist() != meta["success"].to_pylist():
        problems.append(f"{run.path}: success flags disagree with the episodes-meta rows")
    for name in (*STATS_COLUMNS, SIM_STATE):
        if name in features and not np.isfinite(to_numpy(table[name], features[name])).all():
            problems.append(f"{run.path}: column {name!r} holds non-finite values")
    return problems


def _check_video_file(run: DataRun, state: StoreState, key: str) -> list[str]:
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
