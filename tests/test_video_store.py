"""Camera images in the episode store: mp4 videos in the LeRobot v3 layout, exact or close
round trips, the episodes-meta `videos/*` columns, corruption named, SIGKILL survived."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aloe.data import Episode, image_key
from aloe.datasets.store import EpisodeStore, StoreError

sys.path.insert(0, str(Path(__file__).parent / "datasets"))
from test_store import STORE_KW, kill_writers, make_episode  # noqa: E402

CAMERAS = {"corner": (16, 24), "topview": (8, 8)}
KEYS = [image_key(c) for c in CAMERAS]


def smooth_images(seed: int, n: int, height: int, width: int) -> np.ndarray:
    """Moving colour gradients (codec-friendly): a deterministic function of the arguments."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    t = np.arange(n)[:, None, None, None] / 10
    phase = rng.uniform(0, 2 * np.pi, 3)
    image = 127.5 + 80 * np.sin(x[..., None] + y[..., None] + t + phase)
    return image.astype(np.uint8)


def noisy_images(seed: int, n: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def with_images(ep: Episode, seed: int, make: Any = noisy_images) -> Episode:
    for camera, (height, width) in CAMERAS.items():
        ep.steps[image_key(camera)] = make(seed * 7 + height, len(ep), height, width)
    return ep


def episode(seed: int, make: Any = noisy_images) -> Episode:
    return with_images(make_episode(seed), seed, make)


def images(episodes: list[Episode], key: str) -> np.ndarray:
    return np.concatenate([ep.steps[key] for ep in episodes])


@pytest.fixture
def lossless(tmp_path: Path) -> tuple[EpisodeStore, list[Episode]]:
    store = EpisodeStore.create(
        tmp_path / "store", **STORE_KW, cameras=CAMERAS, video_codec="lossless"
    )
    eps = [episode(0), episode(1), episode(2)]
    store.append(eps[:2])
    store.append(eps[2])
    return store, eps


def test_lossless_videos_round_trip_bit_exact(lossless: tuple[EpisodeStore, list[Episode]]):
    written, eps = lossless
    for store in (written, EpisodeStore.open(written.root)):
        assert store.cameras == list(CAMERAS) and store.video_codec == "lossless"
        assert store.image_shape("corner") == (16, 24)
        for key in KEYS:
            got = store.load_images(key)
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, images(eps, key))
        assert store.check() == []
    np.testing.assert_array_equal(store.load_images("topview"), images(eps, KEYS[1]))
    assert not any(k.startswith("observation.images") for k in store.load_frames())


def test_layout_and_meta_follow_lerobot_v3(lossless: tuple[EpisodeStore, list[Episode]]):
    store, eps = lossless
    info = json.loads((store.root / "meta/info.json").read_text())
    feature = info["features"][KEYS[0]]
    assert feature["dtype"] == "video" and feature["shape"] == [16, 24, 3]
    assert feature["names"] == ["height", "width", "channels"]
    assert feature["info"]["video.fps"] == STORE_KW["fps"]
    assert (feature["info"]["video.height"], feature["info"]["video.width"]) == (16, 24)
    assert feature["info"]["has_audio"] is False and feature["info"]["video.is_depth_map"] is False
    for key in KEYS:
        for number in (0, 1):
            assert (store.root / f"videos/{key}/chunk-000/file-{number:03d}.mp4").is_file()
    meta = store.episodes().to_pydict()
    fps = STORE_KW["fps"]
    for key in KEYS:
        assert meta[f"videos/{key}/file_index"] == [0, 0, 1]
        assert meta[f"videos/{key}/chunk_index"] == [0, 0, 0]
        n0, n1, n2 = (len(ep) for ep in eps)
        assert meta[f"videos/{key}/from_timestamp"] == pytest.approx([0, n0 / fps, 0])
        assert meta[f"videos/{key}/to_timestamp"] == pytest.approx(
            [n0 / fps, (n0 + n1) / fps, n2 / fps]
        )
    files = store.video_files("corner")
    assert [f.file_id for f in files] == ["chunk-000/file-000", "chunk-000/file-001"]
    np.testing.assert_array_equal(
        np.concatenate([f.index for f in files]), np.arange(sum(n for n in (n0, n1, n2)))
    )
    frames = store.read_video(KEYS[0], "chunk-000/file-001")
    np.testing.assert_array_equal(frames, eps[2].steps[KEYS[0]])
    with pytest.raises(KeyError, match="file-009"):
        store.read_video(KEYS[0], "chunk-000/file-009")
    assert store.summary()["cameras"] == CAMERAS


def test_h264_is_close_on_smooth_images(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "store", **STORE_KW, cameras=CAMERAS)
    eps = [episode(s, smooth_images) for s in range(3)]
    store.append(eps[:2])
    store.append(eps[2:])
    store = EpisodeStore.open(store.root)
    assert store.video_codec == "h264" and store.check() == []
    for key in KEYS:
        got = store.load_images(key).astype(np.int16)
        error = np.abs(got - images(eps, key)).mean()
        assert error < 8, (key, error)


def test_store_reopens_and_grows(lossless: tuple[EpisodeStore, list[Episode]]) -> None:
    store, eps = lossless
    again = EpisodeStore.open_or_create(
        store.root,
        **STORE_KW,
        cameras={"corner": [16, 24], "topview": (8, 8)},
        video_codec="lossless",
    )
    again.append(episode(3))
    with pytest.raises(StoreError, match="cameras"):
        EpisodeStore.open_or_create(store.root, **STORE_KW, cameras={"corner": (16, 24)})
    store = EpisodeStore.open(store.root)
    assert store.num_episodes == 4 and store.check() == []
    np.testing.assert_array_equal(store.load_images("corner"), images([*eps, episode(3)], KEYS[0]))


def test_missing_or_short_video_is_named(lossless: tuple[EpisodeStore, list[Episode]]) -> None:
    store, _ = lossless
    path = store.root / f"videos/{KEYS[1]}/chunk-000/file-001.mp4"
    saved = path.read_bytes()
    path.unlink()
    with pytest.raises(StoreError, match=f"{path}: missing"):
        EpisodeStore.open(store.root)
    assert store.check() == [f"{path}: missing (holds episodes 2..2)"]

    other = store.root / f"videos/{KEYS[1]}/chunk-000/file-000.mp4"
    path.write_bytes(other.read_bytes())  # a video with the wrong number of frames
    with pytest.raises(StoreError, match=f"{path}: has \\d+ frames"):
        EpisodeStore.open(store.root)
    path.write_bytes(saved[: len(saved) // 2])
    problems = store.check()  # its checksum, then why it does not open
    assert len(problems) == 2 and all(p.startswith(f"{path}: ") for p in problems)
    assert problems[0].endswith("corrupt")


def test_append_refuses_bad_images(lossless: tuple[EpisodeStore, list[Episode]]) -> None:
    store, _ = lossless
    ep = episode(5)
    del ep.steps[KEYS[0]]
    with pytest.raises(ValueError, match="is missing"):
        store.append(ep)
    ep = episode(5)
    ep.steps[KEYS[0]] = ep.steps[KEYS[0]][:, :8]
    with pytest.raises(ValueError, match="expects uint8"):
        store.append(ep)
    with pytest.raises(ValueError, match="not features"):
        EpisodeStore.create(store.root.parent / "plain", **STORE_KW).append(episode(5))


def test_codec_and_shape_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'vp8'.*h264.*lossless"):
        EpisodeStore.create(tmp_path / "a", **STORE_KW, cameras=CAMERAS, video_codec="vp8")
    with pytest.raises(ValueError, match="even"):
        EpisodeStore.create(tmp_path / "b", **STORE_KW, cameras={"corner": (15, 16)})
    store = EpisodeStore.create(
        tmp_path / "c", **STORE_KW, cameras={"corner": (15, 16)}, video_codec="lossless"
    )
    store.append(_odd(0))
    np.testing.assert_array_equal(store.load_images("corner"), _odd(0).steps[KEYS[0]])


def _odd(seed: int) -> Episode:
    ep = make_episode(seed)
    ep.steps[KEYS[0]] = noisy_images(seed, len(ep), 15, 16)
    return ep


VIDEO_STORE_KW = dict(STORE_KW, cameras=CAMERAS, video_codec="lossless")


@pytest.mark.slow
def test_sigkill_leaves_a_readable_store_with_videos(tmp_path: Path) -> None:
    """test_store's kill test with images: writers die, possibly mid-video."""
    root = tmp_path / "store"
    delays = ["0.05", "0.2", "0.4", "+0.3"]
    returned = kill_writers(root, __file__, "VIDEO_STORE_KW", "episode", 3, delays)

    store = EpisodeStore.open(root)
    # all a kill may leave is an append that never committed, which the next one removes
    assert all("an append that never committed" in p for p in store.check())
    assert set(returned) <= set(range(store.num_episodes))
    eps = [episode(s) for s in store.episodes()["seed"].to_pylist()]
    for key in KEYS:
        np.testing.assert_array_equal(store.load_images(key), images(eps, key))
