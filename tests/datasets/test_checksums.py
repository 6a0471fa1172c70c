"""Checksums where the data rests: a flipped bit in any file of a store is named as corrupt by
`dataset check`, a kill at any write of an append never looks like corruption, and a store
written before checksums still opens and checks, then gets them on its next append."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_store import STORE_KW, make_episode

from aloe.data import Episode, image_key
from aloe.datasets import cli, writer
from aloe.datasets.check import check_store
from aloe.datasets.layout import CHECKSUMS_PATH
from aloe.datasets.store import EpisodeStore, StoreError

CAMERA = {"corner": (8, 8)}
# One file of each kind the store keeps (file 1: the second append's).
FILE_KINDS = {
    "data parquet": "data/chunk-000/file-001.parquet",
    "episodes parquet": "meta/episodes/chunk-000/file-001.parquet",
    "info.json": "meta/info.json",
    "stats.json": "meta/stats.json",
    "tasks.parquet": "meta/tasks.parquet",
    "video mp4": f"videos/{image_key('corner')}/chunk-000/file-001.mp4",
    "checksums.json": CHECKSUMS_PATH,
}
# Where the bytes are flipped: fractions of the file's length.
SPOTS = (0.0, 0.25, 0.5, 0.75, 0.999)


def with_camera(ep: Episode, seed: int) -> Episode:
    rng = np.random.default_rng(seed)
    ep.steps[image_key("corner")] = rng.integers(0, 256, (len(ep), 8, 8, 3), dtype=np.uint8)
    return ep


@pytest.fixture
def camera_store(tmp_path: Path) -> Path:
    """Two appends (files 0 and 1), one camera, lossless mp4s."""
    root = tmp_path / "store"
    store = EpisodeStore.create(root, **STORE_KW, cameras=CAMERA, video_codec="lossless")
    store.append([with_camera(make_episode(s), s) for s in (0, 1)])
    store.append(with_camera(make_episode(2, instruction="another task"), 2))
    return root


def flip(path: Path, at: float, n: int = 4) -> None:
    """XOR `n` bytes with 0xFF from fraction `at` of the file (clamped to fit)."""
    data = bytearray(path.read_bytes())
    start = min(int(at * len(data)), len(data) - n)
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("at", SPOTS)
@pytest.mark.parametrize("kind", FILE_KINDS)
def test_a_bit_flip_in_any_file_kind_is_named_corrupt(
    camera_store: Path, kind: str, at: float, capsys: pytest.CaptureFixture[str]
) -> None:
    path = camera_store / FILE_KINDS[kind]
    assert cli.check(camera_store) == 0
    capsys.readouterr()
    flip(path, at)
    assert cli.check(camera_store) == 1
    out, err = capsys.readouterr()
    named = [line for line in err.splitlines() if line.startswith(f"aloe dataset: error: {path}:")]
    assert out == "" and named and "corrupt" in named[0], err
    assert "Traceback" not in err


def test_fast_check_skips_the_hashing(camera_store: Path, capsys: pytest.CaptureFixture[str]):
    path = camera_store / FILE_KINDS["checksums.json"]
    flip(path, 0.5)  # only the map is damaged: the data itself is intact
    assert cli.check(camera_store, fast=True) == 0
    assert cli.check(camera_store) == 1
    assert f"{path}: " in capsys.readouterr().err


def test_the_map_lists_every_committed_file_once(camera_store: Path) -> None:
    sums = json.loads((camera_store / CHECKSUMS_PATH).read_text())["files"]
    files = {p.relative_to(camera_store).as_posix() for p in camera_store.rglob("*")}
    kept = {f for f in files if f.endswith((".parquet", ".mp4", ".json")) and "checksums" not in f}
    assert set(sums) == kept and all(len(digests) == 1 for digests in sums.values())


def test_a_store_without_checksums_still_checks_and_gets_them_on_append(
    camera_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (camera_store / CHECKSUMS_PATH).unlink()
    assert cli.check(camera_store) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok: 3 episodes") and err.count("\n") == 1
    assert err.startswith(f"aloe dataset: notice: {camera_store} has no {CHECKSUMS_PATH}")
    store = EpisodeStore.open(camera_store)
    assert not store.has_checksums and store.num_episodes == 3
    store.append(with_camera(make_episode(3), 3))
    assert store.has_checksums and store.check() == []
    path = camera_store / FILE_KINDS["data parquet"]
    flip(path, 0.5)  # files from before the append are covered too
    assert check_store(camera_store)[0] == f"{path}: sha256 differs from {CHECKSUMS_PATH}: corrupt"


def test_an_append_refuses_a_store_whose_metadata_is_corrupt(camera_store: Path) -> None:
    path = camera_store / "meta/tasks.parquet"
    flip(path, 0.5)
    before = {p: p.read_bytes() for p in camera_store.rglob("*") if p.is_file()}
    store = EpisodeStore.open(camera_store)  # a reader still opens it
    with pytest.raises(StoreError, match=f"{path}: sha256 differs .*: corrupt"):
        store.append(with_camera(make_episode(3), 3))
    with pytest.raises(StoreError, match=f"{path}: sha256 differs .*: corrupt"):
        EpisodeStore.open_or_create(camera_store, **store.layout())  # a collector, at once
    after = {p: p.read_bytes() for p in camera_store.rglob("*") if p.is_file()}
    assert after == before  # nothing recorded over the corruption


def _count_writes(root: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    calls: list[Path] = []
    write = writer.write_bytes
    monkeypatch.setattr(writer, "write_bytes", lambda p, d: (calls.append(p), write(p, d)))
    EpisodeStore.open(root).append(with_camera(make_episode(3, instruction="a third"), 3))
    monkeypatch.undo()
    return len(calls)


def test_a_crash_at_any_write_of_an_append_is_never_corruption(
    tmp_path: Path, camera_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    spare = tmp_path / "spare"
    shutil.copytree(camera_store, spare)
    writes = _count_writes(spare, monkeypatch)
    # checksums (pending), tasks, data, mp4, episodes-meta, stats, info, checksums (settled)
    assert writes == 8
    for k in range(writes):
        root = tmp_path / f"crash-{k}"
        shutil.copytree(camera_store, root)
        crash_on_write(root, k, monkeypatch)
        store = EpisodeStore.open(root)
        problems = store.check()
        assert all("an append that never committed" in p for p in problems), (k, problems)
        assert store.num_episodes == (3 if k <= 4 else 4), k  # write 4 commits
        store = EpisodeStore.open_or_create(root, **store.layout())
        store.append(with_camera(make_episode(4), 4))
        assert EpisodeStore.open(root).check() == [], k


def crash_on_write(root: Path, k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Append one episode to `root`, raising KeyboardInterrupt instead of its k-th write."""
    calls: list[Any] = []
    write = writer.write_bytes

    def crashing(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == k + 1:
            raise KeyboardInterrupt
        write(path, data)

    monkeypatch.setattr(writer, "write_bytes", crashing)
    with pytest.raises(KeyboardInterrupt):
        EpisodeStore.open(root).append(with_camera(make_episode(3, instruction="a third"), 3))
    monkeypatch.undo()
