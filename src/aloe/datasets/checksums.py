"""Checksums where the data rests: every committed file's sha256 in `meta/checksums.json`.

The file maps each committed file (relative path) to the list of its accepted sha256
digests, and carries the digest of that map itself, so a flipped bit in checksums.json is
told apart from one in the files it lists. Settled, every list holds one digest. An append
(`writer.append`) first writes a *pending* map, in which every file it is about to write
lists its old digest (if any) and its new one, then writes its files, then the settled map:
a kill at any moment leaves each committed file matching one of its listed digests, so no
crash is ever reported as corruption, and no corruption passes for a crash. Files an
append wrote but never committed are not committed files, so they are never checked here.

A store written before checksums has no checksums.json; it still opens and checks (its
files are checked for structure only), and its next append records them all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from aloe.datasets.layout import (
    CHECKSUMS_PATH,
    EPISODES_PATH,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    StoreError,
    file_name,
    video_keys,
)
from aloe.datasets.reader import StoreState, data_runs, one_line

FORMAT = 1
# The files an append rewrites in place; every other committed file is written once.
MUTABLE = (INFO_PATH, STATS_PATH, TASKS_PATH)
Sums = dict[str, list[str]]
_BLOCK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def encode(sums: Mapping[str, list[str]]) -> bytes:
    """checksums.json's bytes: the map, sorted, and the digest of its canonical JSON."""
    files = {rel: list(sums[rel]) for rel in sorted(sums)}
    body = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    doc = {"format": FORMAT, "files": files, "sha256": sha256_bytes(body)}
    return json.dumps(doc, indent=1).encode()


def read(root: Path) -> Sums | None:
    """The store's checksum map; None if it has no checksums.json (written before checksums).

    StoreError if the file is unreadable or its own digest disagrees with its map."""
    path = root / CHECKSUMS_PATH
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: unreadable JSON ({one_line(e)}): corrupt") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    valid = isinstance(files, dict) and all(
        isinstance(v, list) and v and all(isinstance(h, str) for h in v) for v in files.values()
    )
    if not valid or doc.get("format") != FORMAT:
        raise StoreError(f"{path}: not a format-{FORMAT} checksum map: corrupt")
    body = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    if sha256_bytes(body) != doc.get("sha256"):
        raise StoreError(f"{path}: its digest disagrees with the checksums it lists: corrupt")
    return files


def committed(root: Path, state: StoreState) -> list[str]:
    """Every committed file of the store, as paths relative to `root`: the meta files, the
    episodes-meta files, and the data files and mp4s their rows point at."""
    cs = state.info["chunks_size"]
    rels = [*MUTABLE, *(file_name(EPISODES_PATH, n, cs) for n in state.files)]
    runs = data_runs(root, state.meta)
    for key in video_keys(state.info["features"]):
        runs += data_runs(root, state.meta, key)
    return rels + [run.path.relative_to(root).as_posix() for run in runs]


def verify(root: Path, sums: Sums, rels: list[str]) -> list[str]:
    """Hash each of `rels` and compare: one line per file that is missing from the map,
    missing from disk, or whose sha256 is none of its listed digests (corrupt)."""
    problems = []
    for rel in rels:
        path = root / rel
        if rel not in sums:
            problems.append(f"{path}: not in {CHECKSUMS_PATH} (added by hand, or the map lost it)")
        elif not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) not in sums[rel]:
            problems.append(f"{path}: sha256 differs from {CHECKSUMS_PATH}: corrupt")
    return problems


def settle(root: Path, state: StoreState, sums: Sums) -> Sums:
    """The settled map of the committed files: one digest each; a file that lists several
    (an append was killed before it settled the map) keeps the one its bytes have.

    StoreError if a meta file (info.json, stats.json, tasks.parquet: cheap to hash, and
    every append rewrites them) matches none of its digests: growing a store whose
    metadata is corrupt would record the corruption as good."""
    require_meta_intact(root, sums)
    settled = {}
    for rel in committed(root, state):
        digests = sums.get(rel)
        if digests is None:
            raise StoreError(f"{root / rel}: not in {CHECKSUMS_PATH}")
        if len(digests) > 1:
            found = sha256_file(root / rel)
            if found not in digests:
                raise StoreError(f"{root / rel}: sha256 differs from {CHECKSUMS_PATH}: corrupt")
            digests = [found]
        settled[rel] = digests
    return settled


def require_meta_intact(root: Path, sums: Sums | None) -> None:
    """StoreError naming the first of info.json, stats.json and tasks.parquet whose bytes
    match none of their digests (a store without checksums passes)."""
    problems = [] if sums is None else verify(root, sums, list(MUTABLE))
    if problems:
        raise StoreError(problems[0])


def fresh(root: Path, state: StoreState) -> Sums:
    """The map of a store written before checksums: its committed files as they are now."""
    return {rel: [sha256_file(root / rel)] for rel in committed(root, state)}


def pending(sums: Sums, new: Mapping[str, str]) -> Sums:
    """What an append writes before its files: each file to be written lists its present
    digest (if it has one) and the one it is about to have."""
    return sums | {rel: [*sums.get(rel, []), digest] for rel, digest in new.items()}


def is_settled(root: Path) -> bool:
    """False if an append was killed after writing a pending map (the next writer settles it)."""
    try:
        sums = read(root)
    except StoreError:
        return True  # corrupt, not unsettled: `check` and the next append name it
    return sums is None or all(len(v) == 1 for v in sums.values())
