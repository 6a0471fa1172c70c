"""Per-frame features of a frozen image encoder, cached on disk beside the dataset.

The encoder never trains, so each frame is encoded once. Layout under `root` (e.g.
`<dataset>/cache/features`):

    <identity[:16]>/encoder.json                  full identity, name, config, feature_dim
    <identity[:16]>/<camera>/<file_id>.npy        float32 (n, F), rows in the file's order

with '/' in camera and file ids written as '__'. Opening a cache removes the directories of
every other identity: features of a changed encoder are never read. The cache knows
nothing of the dataset store; callers describe each video file by its id, the global frame
indices it holds, and a function that decodes its frames.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aloe.vision.encoders import ImageEncoder

FrameFile = tuple[str, np.ndarray, Callable[[], np.ndarray]]
"""(file_id, global frame indices (n,), load_frames() -> uint8 (n, H, W, 3))."""

_DIGEST_DIR = re.compile(r"[0-9a-f]{16}")  # only such dirs are ever removed from root
_MANIFEST = "encoder.json"


class FeatureCache:
    """Features of `encoder` for frames of video files, computed once and kept under `root`.

    `hits` and `misses` count files read from disk and files encoded, over the cache's
    life; `invalidated` is the number of other encoders' directories removed on opening.
    """

    def __init__(self, root: str | os.PathLike[str], encoder: ImageEncoder) -> None:
        self.root = Path(root)
        self.encoder = encoder
        self.identity = encoder.identity
        self.dir = self.root / self.identity[:16]
        self.hits = 0
        self.misses = 0
        self.invalidated = self._invalidate()
        self._write_manifest()

    def path(self, camera: str, file_id: str) -> Path:
        """Where the features of one camera's video file are kept."""
        return self.dir / _safe(camera) / f"{_safe(file_id)}.npy"

    def features(self, camera: str, files: Sequence[FrameFile]) -> np.ndarray:
        """float32 (N, F) for all frames of `files`, rows sorted by ascending global index.

        Row i belongs to the i-th smallest index of the concatenated index arrays; when the
        files hold frames 0..N-1 (a whole dataset), row i is frame i. A file already cached
        is read without calling its `load_frames` or the encoder; the others are decoded,
        encoded and written atomically. A cached file whose row count differs from its
        index, or that cannot be read, is recomputed. Duplicate indices raise ValueError.
        """
        if not files:
            return np.empty((0, self.encoder.feature_dim), dtype=np.float32)
        parts = []
        indices = []
        for file_id, index, load_frames in files:
            index = np.asarray(index).reshape(-1)
            parts.append(self._file_features(camera, file_id, index, load_frames))
            indices.append(index)
        index = np.concatenate(indices)
        order = np.argsort(index, kind="stable")
        if (np.diff(index[order]) == 0).any():
            raise ValueError(f"camera {camera!r}: the files' frame indices overlap")
        return np.concatenate(parts)[order]

    def _file_features(
        self,
        camera: str,
        file_id: str,
        index: np.ndarray,
        load_frames: Callable[[], np.ndarray],
    ) -> np.ndarray:
        path = self.path(camera, file_id)
        cached = _read(path, (len(index), self.encoder.feature_dim))
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        frames = load_frames()
        if len(frames) != len(index):
            raise ValueError(
                f"{camera}/{file_id}: load_frames gave {len(frames)} frames for {len(index)} indices"
            )
        feats = np.asarray(self.encoder.encode(frames), dtype=np.float32)
        write_atomic(path, lambda f: np.save(f, feats, allow_pickle=False))
        return feats

    def _invalidate(self) -> int:
        if not self.root.is_dir():
            return 0
        removed = 0
        for entry in sorted(self.root.iterdir()):
            if not (entry.is_dir() and _DIGEST_DIR.fullmatch(entry.name)):
                continue
            if entry != self.dir or self._manifest_identity() not in (None, self.identity):
                shutil.rmtree(entry)
                removed += 1
        return removed

    def _manifest_identity(self) -> str | None:
        try:
            identity = json.loads((self.dir / _MANIFEST).read_text())["identity"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return str(identity)

    def _write_manifest(self) -> None:
        if self._manifest_identity() == self.identity:
            return
        manifest: dict[str, Any] = {
            "identity": self.identity,
            "name": self.encoder.name,
            "config": self.encoder.config(),
            "feature_dim": self.encoder.feature_dim,
        }
        text = json.dumps(manifest, indent=2, sort_keys=True).encode()
        write_atomic(self.dir / _MANIFEST, lambda f: f.write(text))


def _safe(name: str) -> str:
    safe = name.replace("/", "__")
    if safe in ("", ".", "..") or "\\" in safe or "\0" in safe:
        raise ValueError(f"cannot use {name!r} as a cache file name")
    return safe


def _read(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The cached array, or None if it is missing, unreadable, or of another shape/dtype."""
    try:
        feats = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(feats, np.ndarray) or feats.dtype != np.float32 or feats.shape != shape:
        return None
    return feats


def write_atomic(path: Path, write: Callable[[Any], object]) -> None:
    """Write via a temporary file, fsync, rename: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
