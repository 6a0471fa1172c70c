"""The crash-safe episode store: a LeRobotDataset v3 directory that only ever grows.

`EpisodeStore` is the one way in; the work is split by concern: `layout.py` (paths, schemas,
the episodes-meta row), `reader.py` (open, validate, read), `check.py` (the full check),
`writer.py` (create, append, crash cleanup; its docstring gives the crash-safety argument),
`checksums.py` (every committed file's sha256) and `claims.py` (seeds shared by concurrent
collectors).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from aloe.data import ACTION, IMAGE_PREFIX, SIM_STATE, SOURCES, STATE, Episode, image_key
from aloe.datasets import checksums, claims, reader, video, writer
from aloe.datasets.check import check_store, has_checksums
from aloe.datasets.layout import (
    INFO_PATH,
    StoreError,
    StoreExists,
    StoreMismatch,
    StoreRefused,
    layout_mismatch,
    video_keys,
)
from aloe.datasets.reader import StoreState
from aloe.datasets.video import VideoFile
from aloe.datasets.writer import location_problem

__all__ = [
    "EpisodeStore",
    "StoreError",
    "StoreExists",
    "StoreMismatch",
    "StoreRefused",
    "location_problem",
]


class EpisodeStore:
    """Episodes on disk in the LeRobotDataset v3 layout; `append` is the only way to write."""

    def __init__(self, root: Path, state: StoreState) -> None:
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
        videos (`video_codec`: "h264", small and lossy, or "lossless", bit-exact). Raises
        StoreExists if there is a store at `root`, made earlier or by a concurrent creator.
        """
        root = Path(root)
        writer.create_store(
            root,
            fps=fps,
            state_dim=state_dim,
            action_dim=action_dim,
            robot_type=robot_type,
            sim_state_dim=sim_state_dim,
            cameras=cameras,
            video_codec=video_codec,
        )
        return cls.open(root)

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> EpisodeStore:
        """Validate the metadata and every data file's footer; raise StoreError if corrupt."""
        return cls(Path(root), reader.load_state(Path(root)))

    @classmethod
    def open_or_create(
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
        """Open the store at `root` to grow it, or create it there if there is none.

        Takes `create`'s arguments. Before anything is written it raises StoreRefused if
        `root` cannot hold a store, StoreMismatch if the store there records other
        columns than these (another camera set, state_dim, ...), and StoreError if its
        metadata fails its checksums (an append would record the corruption as good).
        """
        root = Path(root)
        cameras = {c: (int(h), int(w)) for c, (h, w) in (cameras or {}).items()}
        layout: dict[str, Any] = {"fps": fps, "state_dim": state_dim, "action_dim": action_dim}
        layout |= {"robot_type": robot_type, "sim_state_dim": sim_state_dim}
        layout |= {"cameras": cameras, "video_codec": video_codec}
        if not (root / INFO_PATH).exists():
            try:
                return cls.create(root, **layout)
            except StoreExists:
                pass  # a concurrent creator won the race: grow its store
        problem = location_problem(root)
        if problem:
            raise StoreRefused(root, problem)
        store = cls.open(root)
        mismatch = layout_mismatch(store.layout(), layout)
        if mismatch:
            raise StoreMismatch(root, mismatch)
        checksums.require_meta_intact(root, checksums.read(root))  # before any episode
        if store._state.stale or not checksums.is_settled(root):
            writer.repair(root, store._state)
        return store

    def layout(self) -> dict[str, Any]:
        """What the store fixed at creation, as `create`'s keyword arguments."""
        return {
            "fps": self.fps,
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "robot_type": self._info["robot_type"],
            "sim_state_dim": self.sim_state_dim,
            "cameras": {c: self.image_shape(c) for c in self.cameras},
            "video_codec": self.video_codec,
        }

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
        return writer.append(self.root, self._state, eps)

    def claim_seeds(self, start: int, stop: int = 2**31) -> Generator[int, None, None]:
        """Seeds from `start` up that the store holds no episode of and no other live
        collector is recording, in order; `claims.claim_seeds` says how concurrent
        collectors share them. Close it (`contextlib.closing`) when done."""
        return claims.claim_seeds(self.root, self._state, start, stop)

    def load_frames(self, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every committed frame in global index order: vectors 2-D, strings as objects.

        Camera images are not among the columns: see `load_images`.
        """
        return reader.read_frames(self.root, self._state, columns)

    def video_files(self, key: str) -> list[VideoFile]:
        """The committed mp4s of a camera (its name or its `observation.images.*` key), in order."""
        return reader.video_files(self.root, self._state, self._video_key(key))

    def read_video(self, key: str, file_id: str) -> np.ndarray:
        """The frames of one of `video_files(key)`, uint8 (n, H, W, 3)."""
        for file in self.video_files(key):
            if file.file_id == file_id:
                return reader.decode_video(file, self.image_shape(key))
        raise KeyError(f"{self.root}: {key!r} has no committed video {file_id!r}")

    def load_images(self, key: str) -> np.ndarray:
        """Every committed frame of a camera in global index order, uint8 (N, H, W, 3)."""
        height, width = self.image_shape(key)
        files = self.video_files(key)
        frames = [reader.decode_video(file, (height, width)) for file in files]
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

    def check(self, fast: bool = False) -> list[str]:
        """Full validation, reading every file and, unless `fast`, comparing each committed
        file's sha256 with meta/checksums.json; an empty list means healthy."""
        return check_store(self.root, fast)

    @property
    def has_checksums(self) -> bool:
        """False for a store written before checksums (its next append records them)."""
        return has_checksums(self.root)

    def _video_key(self, key: str) -> str:
        for name in (key, image_key(key)):
            if video.is_video(self._features.get(name, {})):
                return name
        raise KeyError(f"{self.root}: no camera {key!r}; cameras: {self.cameras}")
