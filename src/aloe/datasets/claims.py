"""Seed claims: how concurrent collectors into one store share its seeds without recording
one twice. `EpisodeStore.claim_seeds` is the way in."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Generator
from pathlib import Path

from aloe.datasets.layout import CLAIMS
from aloe.datasets.reader import StoreState, refresh
from aloe.datasets.writer import writer_lock
from aloe.durable import ensure_dir
from aloe.errors import UsageError


def claim_seeds(root: Path, state: StoreState, start: int, stop: int) -> Generator[int, None, None]:
    """Seeds from `start` up to `stop` (excluded) that the store holds no episode of and no
    other live collector is recording, each claimed until the next one is asked for.

    A claim is an flock on `meta/.claims/seed-N`, taken under the writer lock after a fresh
    look at the store's seeds; the caller appends the seed's episode before asking for the
    next, so a seed is always either claimed or stored, and concurrent collectors never
    record one twice. A killed collector's flocks die with it: its seed is free again.
    Claim files are unlinked only under the writer lock, so no claimer holds a lock on a
    file that is no longer there. UsageError when no seed is left below `stop`."""
    claim: tuple[int, Path] | None = None
    seed = start
    try:
        while True:
            with writer_lock(root):
                _release(claim)
                claim = None
                refresh(root, state)
                stored = set(state.meta["seed"].to_pylist())
                while True:
                    if seed >= stop:
                        raise UsageError(
                            f"{root}: every seed from {start} to {stop - 1} is stored or being "
                            "recorded; give a lower seed count or another store"
                        )
                    if seed not in stored:
                        claim = _try_claim(root / CLAIMS, seed)
                        if claim is not None:
                            break
                    seed += 1
            yield seed
            seed += 1
    finally:
        if claim is not None:
            with writer_lock(root):
                _release(claim)


def _try_claim(folder: Path, seed: int) -> tuple[int, Path] | None:
    """(fd, path) of an exclusive flock on `folder/seed-N`, or None if a live process holds it."""
    ensure_dir(folder)
    path = folder / f"seed-{seed}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd, path


def _release(claim: tuple[int, Path] | None) -> None:
    if claim is not None:
        claim[1].unlink(missing_ok=True)
        os.close(claim[0])
