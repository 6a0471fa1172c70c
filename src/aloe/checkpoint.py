"""Checkpoints as safetensors + JSON (never pickle), written atomically.

A checkpoint is a directory `iter-NNNN/` holding `tensors.safetensors` and `state.json`. It
is written as `iter-NNNN.tmp/`, fsync'd and renamed, so a kill at any moment leaves every
complete checkpoint loadable and no half-written one that a reader would pick up.

Nested state (module, optimiser and scheduler state_dicts, RNG states) is split into its
tensors, stored in safetensors under their path, and a JSON skeleton of everything else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from aloe.datasets._format import fsync_path

_NAME = re.compile(r"^iter-(\d{4,})$")


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
    save_file(tensors, str(tmp / "tensors.safetensors"))
    (tmp / "state.json").write_text(json.dumps(skeleton))
    for f in tmp.iterdir():
        fsync_path(f)
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(root)
    return final


def load(path: Path) -> dict[str, Any]:
    try:
        tensors = load_file(str(path / "tensors.safetensors"))
        skeleton = json.loads((path / "state.json").read_text())
        return unflatten(skeleton, tensors)
    except Exception as e:  # safetensors raises its own error type for a bad header
        raise RuntimeError(f"{path}: unreadable checkpoint ({e})") from e


def complete(root: Path) -> list[tuple[int, Path]]:
    """All complete checkpoints under `root`, oldest first (`.tmp` ones are ignored)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest(root: Path) -> tuple[int, Path] | None:
    found = complete(root)
    return found[-1] if found else None
