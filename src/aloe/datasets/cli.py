"""Read-only views for a human: `info` and `check` of an episode store, `inspect` of any
LeRobotDataset v3 (or store) as a run's demonstrations; each returns an exit code.

Findings go to stdout, problems to stderr (one line each), and a damaged store (or a dataset
that does not fit the run asked about) exits 1; a path that holds no store is a UsageError
(exit 2).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from aloe.datasets.check import check_store, has_checksums
from aloe.datasets.demos import TASK, Demos, DemosMap, DemosPlan, open_dataset
from aloe.datasets.layout import CHECKSUMS_PATH, INFO_PATH
from aloe.datasets.store import EpisodeStore, StoreError
from aloe.errors import UsageError, bad, require


def _open(root: str | os.PathLike[str]) -> EpisodeStore | None:
    """The store, or None after printing why it is damaged.

    A path that holds no store at all is the user's mistake: a UsageError (exit 2)."""
    _require_store(Path(root))
    try:
        return EpisodeStore.open(root)
    except StoreError as e:
        print(f"aloe dataset: error: {e}", file=sys.stderr)
        return None


def _require_store(root: Path) -> None:
    hint = "give a store written by `aloe collect` (or a run's dataset/)"
    require(root.exists(), "PATH", root, f"does not exist; {hint}")
    require(root.is_dir(), "PATH", root, f"is a file; {hint}")
    if not (root / INFO_PATH).is_file():
        inner = root / "dataset"
        if (inner / INFO_PATH).is_file():
            hint = f"did you mean {inner}?"
        raise bad("PATH", root, f"is not an aloe store (no {INFO_PATH}); {hint}")


def info(root: str | os.PathLike[str]) -> int:
    """Print what the store holds: episodes, frames by source, takeovers, outcomes."""
    store = _open(root)
    if store is None:
        return 1
    s = store.summary()
    rate = "n/a" if s["success_rate"] is None else f"{s['success_rate']:.1%}"
    print(f"store:         {store.root}")
    print(f"episodes:      {s['episodes']}")
    print(f"frames:        {s['frames']} at {store.fps:g} fps")
    print("by source:     " + ", ".join(f"{k} {v}" for k, v in s["frames_by_source"].items()))
    print(f"tasks:         {s['tasks']}")
    if s.get("cameras"):
        shapes = ", ".join(f"{c} {h}x{w}" for c, (h, w) in s["cameras"].items())
        print(f"cameras:       {shapes} ({store.video_codec} mp4)")
    print(f"takeovers:     {s['takeovers']}")
    print(f"human steps:   {s['human_steps']}")
    print(f"success rate:  {rate}")
    per_iteration = [
        f"{it}: {n} episodes / {s['frames_per_iteration'][it]} frames"
        for it, n in s["episodes_per_iteration"].items()
    ]
    print(f"per iteration: {', '.join(per_iteration) or 'none'}")
    print("failure reasons:" + ("" if s["failure_reasons"] else " none"))
    for reason, count in s["failure_reasons"].items():
        print(f"  {reason}: {count}")
    return 0


def check(root: str | os.PathLike[str], fast: bool = False) -> int:
    """Validate every file of the store; print each problem (stderr), or one `ok` line.

    Unless `fast`, each committed file's sha256 is compared with meta/checksums.json, also
    in a store too damaged to open; a store written before checksums has none, which one
    notice line says."""
    root = Path(root)
    _require_store(root)
    if not fast and not has_checksums(root):
        print(
            f"aloe dataset: notice: {root} has no {CHECKSUMS_PATH} (written before "
            "checksums): its files are checked for structure only; its next append records them",
            file=sys.stderr,
        )
    problems = check_store(root, fast)
    for problem in problems:
        print(f"aloe dataset: error: {problem}", file=sys.stderr)
    if problems:
        return 1
    store = EpisodeStore.open(root)
    print(f"ok: {store.num_episodes} episodes, {store.num_frames} frames")
    return 0


def inspect(
    root: str | os.PathLike[str],
    mapping: DemosMap,
    plan: Callable[[Demos], DemosPlan] | None = None,
    run: str = "",
) -> int:
    """Print what a dataset holds and what `mapping` reads of it as `--demos`; with `plan`
    (the checks of `aloe train` on the run `run` describes), whether that run takes it.
    Exit 1 when the mapping or the run does not fit (the reason on stderr), 2 (UsageError)
    when `root` is no readable v3 dataset."""
    dataset = open_dataset(Path(root), "PATH")
    lengths = dataset.lengths
    kind = "an aloe store" if dataset.is_aloe_store else "LeRobotDataset"
    print(f"dataset:      {root} ({kind} {dataset.info['codebase_version']})")
    print(f"robot_type:   {dataset.info.get('robot_type')}")
    print(f"fps:          {dataset.fps:g}")
    print(
        f"episodes:     {dataset.num_episodes}, {dataset.num_frames} frames (length "
        f"{lengths.min()}..{lengths.max()}, mean {np.mean(lengths):.0f})"
    )
    tasks = [f"{i}: {t!r}" for i, t in enumerate(dataset.tasks[:5])]
    more = f"; {len(dataset.tasks) - 5} more" if len(dataset.tasks) > 5 else ""
    print(f"tasks:        {len(dataset.tasks)} ({'; '.join(tasks)}{more})")
    cameras = [k for k, f in dataset.features.items() if f.get("dtype") in ("video", "image")]
    print(f"cameras:      {', '.join(_camera(dataset.features[k], k) for k in cameras) or 'none'}")
    instruction = "task_index" if mapping.instruction == TASK else mapping.instruction
    roles = {mapping.state: "-> state", mapping.action: "-> action"}
    roles.setdefault(instruction, "-> instruction")
    for k, key in enumerate(mapping.cameras):
        roles.setdefault(key, f"-> camera {k}")
    print("features:")
    for name, feature in dataset.features.items():
        shape = feature.get("shape")
        line = f"  {name:32s} {feature.get('dtype')!s:8s} {shape!s:16s} {roles.get(name, '')}"
        print(line.rstrip())
    try:
        demos = Demos(Path(root), dataset, mapping, "--demos")
    except UsageError as e:
        print(f"aloe dataset: error: as --demos: {e}", file=sys.stderr)
        return 1
    print("mapping:      " + ", ".join(f"{k} {v}" for k, v in demos.mapped().items()))
    if plan is None:
        return 0
    try:
        chosen = plan(demos)
    except UsageError as e:
        print(f"aloe dataset: error: does not fit {run}: {e}", file=sys.stderr)
        return 1
    if chosen.cameras:
        print("camera map:   " + ", ".join(f"{c} <- {k}" for c, k in chosen.cameras.items()))
    used = f"{len(chosen.use)} of {dataset.num_episodes} episodes ({chosen.frames} frames)"
    print(f"fits:         {run}: uses {used}" + (f"; {chosen.notice}" if chosen.notice else ""))
    if chosen.target.units is not None:  # a robot run: its sizes are the dataset's
        _robot(demos, chosen)
    return 0


def _robot(demos: Demos, plan: DemosPlan) -> None:
    """What a robot run takes of the dataset as its own: instruction and action units."""
    units, source = demos.action_units()
    ranges = ", ".join(f"{lo:g}..{hi:g}" for lo, hi in zip(units.low, units.high, strict=True))
    print(f"instruction:  {plan.instruction!r} (the most frequent of the episodes used)")
    print(f"action units: {ranges} -> [-1, 1] per action value (from {source})")


def _camera(feature: dict[str, object], key: str) -> str:
    info = feature.get("info")
    codec = info.get("video.codec") if isinstance(info, dict) else feature.get("dtype")
    shape = feature.get("shape")
    size = f"{shape[0]}x{shape[1]}" if isinstance(shape, list) and len(shape) == 3 else shape
    return f"{key} {size} ({codec})"
