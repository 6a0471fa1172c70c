"""A run directory, before and around training: the checks that it can be used (new, or a
run to resume with its data intact), the lock one trainer holds on it, and its config.json
(`aloe.train.prepare_run` and `train` call these in order, as `aloe.distributed.launch` does)."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aloe import checkpoint
from aloe.config import TrainConfig
from aloe.datasets.check import verify_checksums
from aloe.datasets.layout import INFO_PATH
from aloe.datasets.store import EpisodeStore, StoreError
from aloe.durable import ensure_dir
from aloe.errors import bad, require

_KERNEL_FS = (Path("/proc"), Path("/sys"))  # writable-looking to root, no ordinary files


def check_run_data(run: Path) -> None:
    """Refuse to resume a run without the data its history was trained on: a missing or
    emptied dataset/, one whose files fail their checksums, or one holding fewer episodes of
    an iteration than metrics.jsonl says were collected (a resumed run would otherwise go
    on, silently, with a fresh or partial buffer). A run killed before its first commit has
    no history and may lack dataset/; a store written before checksums gets a notice."""
    rows = _metrics_rows(run / "metrics.jsonl")
    root = run / "dataset"
    hint = "restore it; the run cannot go on without its data"
    started = rows or checkpoint.complete(run / "checkpoints")
    if not started and not (root / INFO_PATH).is_file():
        return  # nothing collected yet: the trainer makes the store (or refuses what is there)
    told = f"metrics.jsonl records {sum(r['episodes'] for r in rows)} episodes"
    told = told if rows else "the run has checkpoints"
    what = "is missing" if not root.exists() else "holds no store (no meta/info.json)"
    require(
        (root / INFO_PATH).is_file(), "--resume", run, f"its dataset/ {what}, but {told}; {hint}"
    )
    problems = verify_checksums(root)
    if problems:
        raise bad("--resume", run, f"its dataset/ is damaged: {problems[0]}; {hint}")
    try:
        store = EpisodeStore.open(root)
    except StoreError as e:  # damaged since it was verified
        raise bad("--resume", run, f"its dataset/ is damaged: {e}; {hint}") from None
    if not store.has_checksums:
        print(
            f"aloe train: notice: {root} has no checksums (written before them); "
            "its next append records them",
            file=sys.stderr,
        )
    held = store.summary()["episodes_per_iteration"]
    for row in rows:
        k = row["iteration"]
        n = row["episodes"]
        require(
            held.get(k, 0) >= n,
            "--resume",
            run,
            f"its dataset/ holds {held.get(k, 0)} episodes of iteration {k}, but "
            f"metrics.jsonl records {n} collected; {hint}",
        )


def _metrics_rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows that say how many episodes an iteration collected; none if the
    file is missing or unreadable (the checkpoints' history, which rewrites it, decides)."""
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []
    ok = all(
        isinstance(r, dict)
        and isinstance(r.get("iteration"), int)
        and isinstance(r.get("episodes"), int)
        for r in rows
    )
    return rows if ok else []


def check_run_dir(path: Path, flag: str, resume: bool) -> None:
    """Refuse, before anything is written, a run directory that cannot be used: a new run
    needs a new or empty directory it can create, a resumed one a run directory it can write."""
    hint = "give a run directory written by `aloe train`" if resume else "give a new directory"
    kernel = [fs for fs in _KERNEL_FS if path.resolve().is_relative_to(fs)]
    require(
        not kernel,
        flag,
        path,
        f"is under {kernel[0] if kernel else ''}, a kernel file "
        f"system that holds no ordinary files; {hint}",
    )
    require(not path.exists() or path.is_dir(), flag, path, f"is a file; {hint}")
    if resume:
        require(path.is_dir(), flag, path, f"does not exist; {hint}")
        require(
            (path / "config.json").is_file(),
            flag,
            path,
            f"not a run directory (no config.json); {hint}",
        )
    elif path.is_dir() and any(p.name != RUN_LOCK for p in path.iterdir()):
        started = (path / "config.json").is_file()
        raise bad(
            flag,
            path,
            "exists and is not empty; "
            + ("use --resume to continue it" if started else f"{hint} or an empty one"),
        )
    ancestor = next(p for p in (path, *path.absolute().parents) if p.exists())
    require(ancestor.is_dir(), flag, path, f"cannot be created: {ancestor} is a file; {hint}")
    writable = os.access(ancestor, os.W_OK | os.X_OK)
    require(
        writable and not os.statvfs(ancestor).f_flag & os.ST_RDONLY,
        flag,
        path,
        f"cannot write in {ancestor} (read-only or not yours); give a writable directory",
    )


RUN_LOCK = ".train.lock"  # held by the one process training a run directory


@contextmanager
def run_lock(cfg: TrainConfig, resume: bool) -> Iterator[None]:
    """Hold `cfg.out` for this process's training: an flock on `<out>/.train.lock`, released
    when the process ends however it ends (no stale lock after a kill). A second `aloe train`
    on the same directory, while one runs, is refused before it reads or writes anything:
    two trainers would append their episodes to one store and race for its checkpoints."""
    flag = "--resume" if resume else "--out"
    ensure_dir(cfg.out)
    fd = os.open(cfg.out / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise bad(
                flag,
                cfg.out,
                f"is being trained by another process (pid {holder}); "
                "wait for it to end or stop it, then resume",
            ) from None
        require(
            resume or not (cfg.out / "config.json").exists(),
            flag,
            cfg.out,
            "was started by another process meanwhile; use --resume to continue it",
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def start_run_dir(cfg: TrainConfig) -> None:
    """The new run's directory and its config.json (replaced atomically: never half-written)."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    tmp = cfg.out / "config.json.tmp"
    tmp.write_text(cfg.to_json())
    os.replace(tmp, cfg.out / "config.json")
