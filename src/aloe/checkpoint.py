"""Checkpoints as safetensors + JSON (never pickle), written atomically.

A checkpoint is a directory `iter-NNNN/` holding `tensors.safetensors`, `state.json` and
`sha256.json`, the SHA-256 of the other two files' bytes. It is written as `iter-NNNN.tmp/`,
fsync'd and renamed, so a kill at any moment leaves every complete checkpoint loadable and
no half-written one that a reader would pick up.

`load` checks both hashes, so a checkpoint changed after it was saved is refused even where
it still parses (a flipped byte in a weight, a hand-edited number in the state). The
safetensors header names the manifest, so a new checkpoint that lost it is refused too; one
saved before checkpoints carried hashes (neither) loads unverified, with a notice on stderr.

A checkpoint damaged afterwards (a truncated copy, a disk error, a hand edit) is skipped by
`load_latest`, the one way every command finds the checkpoint to start from: it falls back
to the newest readable one and says on stderr which it skipped and why. Nothing is ever
deleted; a resuming trainer, which must write the skipped iteration again, renames the
damaged directory to `iter-NNNN.broken-<n>` (which `complete` ignores) and keeps its bytes.

Nested state (module, optimiser and scheduler state_dicts, RNG states) is split into its
tensors, stored in safetensors under their path, and a JSON skeleton of everything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import sys
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aloe.durable import fsync_path
from aloe.errors import UsageError, bad

_NAME = re.compile(r"^iter-(\d{4,})$")  # `.tmp` and `.broken-<n>` directories never match
TENSORS = "tensors.safetensors"
STATE = "state.json"
HASHES = "sha256.json"
HASHED = (TENSORS, STATE)  # the files whose SHA-256 `HASHES` holds
_MANIFEST_KEY = "aloe.hashes"  # safetensors metadata: this checkpoint has a `HASHES` file
_MAX_HEADER = 100_000_000  # safetensors refuses longer headers: a larger length is garbage


class CheckpointError(UsageError):
    """A checkpoint directory that cannot be read back; `reason` says what is wrong."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(str(bad("checkpoint", path, reason)))
        self.path = path
        self.reason = reason


class Loaded(NamedTuple):
    iteration: int
    path: Path
    state: dict[str, Any]


def flatten(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split `obj` into a JSON-able skeleton and a flat {path: tensor} dict."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().cpu().clone().contiguous()
            return {"__tensor__": path}
        if isinstance(x, dict):  # keys may be ints (optimiser state): keep their type
            return {"__dict__": [[k, walk(v, f"{path}.{k}")] for k, v in x.items()]}
        if isinstance(x, list | tuple):
            items = [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
            return {"__tuple__": items} if isinstance(x, tuple) else items
        if x is None or isinstance(x, bool | int | float | str):
            return x
        raise TypeError(f"cannot checkpoint {type(x).__name__} at {path!r}")

    return walk(obj, prefix), tensors


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__tuple__" in skeleton:
            return tuple(unflatten(v, tensors) for v in skeleton["__tuple__"])
        return {k: unflatten(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def save(root: Path, iteration: int, state: dict[str, Any]) -> Path:
    """Write `state` as checkpoint `iteration` under `root`; returns its directory."""
    final = root / f"iter-{iteration:04d}"
    if final.exists():
        raise FileExistsError(f"{final}: checkpoint exists; checkpoints are never overwritten")
    tmp = root / f"iter-{iteration:04d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    skeleton, tensors = flatten(state)
    save_file(tensors, str(tmp / TENSORS), metadata={_MANIFEST_KEY: HASHES})
    (tmp / STATE).write_text(json.dumps(skeleton))
    hashes = {name: sha256_of(tmp / name) for name in HASHED}
    (tmp / HASHES).write_text(json.dumps(hashes, indent=1))
    for f in tmp.iterdir():
        fsync_path(f)
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(root)
    return final


def load(path: Path) -> dict[str, Any]:
    """The state saved in checkpoint directory `path`, its files checked against their
    hashes (see the module docstring); CheckpointError says what is wrong."""
    tensors = _read_tensors(path / TENSORS)
    try:
        skeleton = json.loads((path / STATE).read_text())
    except FileNotFoundError:
        raise CheckpointError(path, f"{STATE} is missing") from None
    except OSError as e:
        raise CheckpointError(path, f"{STATE} is unreadable ({e.strerror or e})") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both are
        raise CheckpointError(path, f"{STATE} is not valid JSON ({e})") from None
    verify(path)
    try:
        return unflatten(skeleton, tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(path, f"{STATE} does not match {TENSORS} ({e!r})") from None


def sha256_of(file: Path) -> str:
    """The SHA-256 of a file's bytes, as lowercase hex."""
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path) -> None:
    """Check the files of checkpoint `path` against `HASHES` (CheckpointError naming the file
    that differs). A checkpoint saved before checkpoints carried hashes passes, with a
    one-line notice on stderr; one whose safetensors header names a lost manifest does not."""
    manifest = path / HASHES
    if not manifest.is_file():
        if _names_manifest(path / TENSORS):
            raise CheckpointError(path, f"{HASHES} is missing")
        print(
            f"aloe: checkpoint {path} has no {HASHES} (saved before checkpoints carried "
            "hashes): loaded without verifying its files",
            file=sys.stderr,
        )
        return
    try:
        hashes = json.loads(manifest.read_text())
    except OSError as e:
        raise CheckpointError(path, f"{HASHES} is unreadable ({e.strerror or e})") from None
    except ValueError as e:
        raise CheckpointError(path, f"{HASHES} is not valid JSON ({e})") from None
    if not isinstance(hashes, dict) or sorted(hashes) != sorted(HASHED):
        raise CheckpointError(path, f"{HASHES} does not list the hashes of {', '.join(HASHED)}")
    for name in HASHED:
        if sha256_of(path / name) != hashes[name]:
            raise CheckpointError(
                path, f"{name} does not match its SHA-256 in {HASHES} (one changed since saved)"
            )


def _names_manifest(file: Path) -> bool:
    """Whether a (readable) safetensors file was saved with a `HASHES` manifest beside it."""
    with safe_open(str(file), "pt") as f:
        return (f.metadata() or {}).get(_MANIFEST_KEY) == HASHES


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(file.parent, f"{TENSORS} is missing")
    try:
        return load_file(str(file))
    except Exception as e:  # safetensors raises its own error type for a bad header
        cut = _truncation(file)
        reason = f"{TENSORS} is truncated ({cut})" if cut else f"{TENSORS} is unreadable ({e})"
        raise CheckpointError(file.parent, reason) from None


def _truncation(file: Path) -> str | None:
    """`"<size> of <n> bytes"` when the file is shorter than its safetensors header says
    (8-byte length, JSON, data; "at least" when the JSON itself is cut), else None."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{size} of at least 8 bytes"
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER:
            return None
        if 8 + n > size:
            return f"{size} of at least {8 + n} bytes"
        try:
            header = json.loads(f.read(n))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return None
    promised = 8 + n + max(ends, default=0)
    return f"{size} of {promised} bytes" if size < promised else None


def complete(root: Path) -> list[tuple[int, Path]]:
    """All complete checkpoints under `root`, oldest first (`.tmp` ones are ignored)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest(root: Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint's (iteration, path), readable or not."""
    found = complete(root)
    return found[-1] if found else None


def load_latest(root: Path, set_aside: bool = False) -> Loaded | None:
    """The newest checkpoint under `root` that reads back, or None when there is none at all.

    Each newer unreadable one is named on stderr with its reason, and kept: with `set_aside`
    (a trainer about to write that iteration again) renamed to `iter-NNNN.broken-<n>`, else
    left in place. If none reads back, a UsageError lists why, and nothing is renamed.
    """
    skipped: list[CheckpointError] = []
    for iteration, path in reversed(complete(root)):
        try:
            state = load(path)
        except CheckpointError as e:
            skipped.append(e)
            continue
        for broken in skipped:
            kept = f" (kept as {move_aside(broken.path).name})" if set_aside else ""
            print(
                f"aloe: skipping checkpoint {broken.path}: {broken.reason}{kept}; using "
                f"{path.name}",
                file=sys.stderr,
            )
        return Loaded(iteration, path, state)
    if skipped:
        reasons = "; ".join(f"{e.path.name}: {e.reason}" for e in skipped)
        raise bad("checkpoints", root, f"none of them is readable ({reasons})")
    return None


def move_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint to the first free `NAME.broken-<n>`; returns it."""
    n = 1
    while (aside := path.with_name(f"{path.name}.broken-{n}")).exists():
        n += 1
    os.replace(path, aside)
    fsync_path(path.parent)
    return aside
