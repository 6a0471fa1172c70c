"""Durable writes: a file is either absent, the old version or the complete new one.

A write goes to `<name>.tmp`, is fsync'd and renamed over `<name>`, and the directory is
fsync'd so the rename itself survives a power cut. The episode store and the checkpoints
commit through these; nothing here knows what the bytes are.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write `path` through `write(file)` via `<name>.tmp`: a crash leaves no torn file."""
    ensure_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def ensure_dir(path: Path) -> None:
    """Make `path` and its missing parents, each new entry made durable in its parent."""
    if not path.is_dir():
        ensure_dir(path.parent)
        path.mkdir(exist_ok=True)
        fsync_path(path.parent)


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or a directory (a directory to make a rename or a new entry in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
