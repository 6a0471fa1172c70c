"""Progress on stderr: a bar on a terminal, one plain line per phase in a log.

Every long command takes `--progress/--no-progress`, read into a `Progress` field:

    None  (neither flag)  bars when stderr is a terminal; otherwise, when a phase ends, one
                          line saying what it did and how long it took
    True  (--progress)    bars, even into a log
    False (--no-progress) neither: only results, warnings and errors

so that a captured log (CI, `nohup`, `> log`) never fills with a bar's carriage-return frames.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import tyro
from tqdm.auto import tqdm

Progress = tyro.conf.DisallowNone[bool | None]
"""The type of every `progress` field: tyro reads it as `--progress | --no-progress`,
None when neither is given."""

PROGRESS_HELP = (
    "neither flag: bars when stderr is a terminal, else one line per phase "
    "with its duration; --progress: bars; --no-progress: neither"
)

T = TypeVar("T")


def bars(progress: bool | None) -> bool:
    """Whether `progress` shows bars here: forced, or stderr is a terminal."""
    if progress is None:
        return sys.stderr.isatty()
    return progress


def lines(progress: bool | None) -> bool:
    """Whether `progress` says anything at all (bars or lines): not --no-progress."""
    return progress is not False


def say(message: str, progress: bool | None) -> None:
    """One line on stderr, unless --no-progress."""
    if lines(progress):
        print(message, file=sys.stderr, flush=True)


def plural(n: int, word: str) -> str:
    """`1 episode`, `2 episodes`."""
    return f"{n} {word}" + "s" * (n != 1)


def duration(seconds: float) -> str:
    """`0.4 s`, `12.3 s`, `4 min 05 s`, `1 h 02 min`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class Phase:
    """A phase of work: a tqdm bar, or (in a log) one line when it closes, or nothing.

    Used like the tqdm bar it replaces: `update(n)`, `set_postfix(**values)`, `close()`;
    `unit` is singular (`episode`)."""

    def __init__(
        self,
        desc: str,
        total: int | None,
        progress: bool | None,
        unit: str = "step",
        initial: int = 0,
    ) -> None:
        self.desc, self.unit, self.progress = desc, unit, progress
        self.done = 0  # in this phase (not counting `initial`)
        self.postfix: dict[str, Any] = {}
        self.start = time.perf_counter()
        self.bar = None
        if bars(progress):
            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, unit=unit)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            return
        extra = ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        took = duration(time.perf_counter() - self.start)
        say(
            f"  {self.desc}: {plural(self.done, self.unit)} in {took}"
            + (f" ({extra})" if extra else ""),
            self.progress,
        )

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """Each item, counted; the phase closes after the last."""
        for item in items:
            yield item
            self.update()
        self.close()
