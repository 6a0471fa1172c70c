"""A comparison directory (`aloe compare --out DIR`, layout in `aloe.compare`) and what
its runs say: where each (algorithm, seed) lives, how far it got, which runs are there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aloe.algos.table import ALGORITHMS
from aloe.config import ALGOS, TrainConfig
from aloe.config_json import flat_fields
from aloe.errors import bad

SUMMARY = "summary.json"
REPORT = "report.html"
SETTINGS = "compare.json"


@dataclass
class RunSpec:
    algo: str
    seed: int
    root: Path  # the comparison directory
    kind: str = "train"  # or "action-ope": the action-level OPE of the finished run

    @property
    def name(self) -> str:
        return f"{self.algo}-s{self.seed}"

    @property
    def label(self) -> str:
        return self.name if self.kind == "train" else f"{self.name} action-level OPE"

    @property
    def dir(self) -> Path:
        return self.root / "runs" / self.name

    @property
    def log(self) -> Path:
        return self.root / "logs" / f"{self.name}.log"


@dataclass
class RunState:
    """What a run directory says about its progress."""

    done: int  # completed iterations (metrics.jsonl rows)
    total: int  # iterations a finished run has (BC: 1, the warm start)
    started: bool  # config.json exists: resume rather than start

    @property
    def finished(self) -> bool:
        return self.started and self.done >= self.total


def run_state(run: Path) -> RunState:
    started = (run / "config.json").is_file()
    total = 1
    if started:
        cfg = json.loads((run / "config.json").read_text())
        total = int(cfg["iterations"]) + 1 if ALGORITHMS[cfg["algo"]].iterates else 1
    return RunState(done=len(read_metrics(run)), total=total, started=started)


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_optional(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when it is missing or unreadable (then redone)."""
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise bad(what, path.parent, f"{path.name} is unreadable ({e})") from None


def discover(root: Path) -> dict[str, list[Path]]:
    """Run directories under root/runs by algorithm, in compare.json's (or ALGOS') order."""
    found: dict[str, list[Path]] = {}
    for run in sorted((root / "runs").glob("*-s*")):
        algo, _, seed = run.name.rpartition("-s")
        if algo in ALGOS and seed.isdigit():
            found.setdefault(algo, []).append(run)
    settings = root / SETTINGS
    head = read_json(settings, "comparison") if settings.is_file() else {"algos": ALGOS}
    order = list(head.get("algos", []))
    order += [a for a in found if a not in order]
    return {a: sorted(found[a], key=seed_of) for a in order if a in found}


def seed_of(run: Path) -> int:
    return int(run.name.rpartition("-s")[2])


def is_comparison(root: Path) -> bool:
    return (root / SUMMARY).is_file() or (root / "runs").is_dir()


def settings_changed(run: Path, fresh: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Each config field (dotted) that `fresh`'s algorithm reads and in which `run`'s saved
    config differs from `fresh`, the config a new run of the same comparison gets now:
    (saved, fresh). Left out: the seed and the other algorithms' settings groups. Non-empty
    where aloe's defaults changed since `run` started (a field it did not have reads as
    that field's default, the behaviour of its day)."""
    others = {r.group for a, r in ALGORITHMS.items() if a != fresh.algo and r.group}
    saved = flat_fields(json.loads(TrainConfig.load(run).to_json()))
    now = flat_fields(json.loads(fresh.resolved().to_json()))
    keys = sorted(k for k in saved.keys() | now.keys() if k != "seed")
    keys = [k for k in keys if k.split(".")[0] not in others]
    return {k: (saved.get(k), now.get(k)) for k in keys if saved.get(k) != now.get(k)}
