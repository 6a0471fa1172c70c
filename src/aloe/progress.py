"""Progress on stderr: a bar on a terminal, one plain line per phase in a log.

Every long command takes `--progress/--no-progress`, read into a `Progress` field:

    None  (neither flag)  bars when stderr is a terminal; otherwise plain lines: one when a
                          phase starts, one at most every EVERY_S seconds while it runs
                          (done, rate, time left), one when it ends (what it did, how long)
    True  (--progress)    bars, even into a log
    False (--no-progress) neither: only results, warnings and errors

so that a captured log (CI, `nohup`, `> log`) never fills with a bar's carriage-return
frames, yet never stays silent through a long phase either.
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

EVERY_S = 30.0  # a log's progress lines within a phase: at most one per EVERY_S seconds


def clock() -> float:
    """Seconds on a monotonic clock: what phases time themselves with (a test fakes it)."""
    return time.monotonic()


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
    """A phase of work: a tqdm bar; or, in a log, a line when it starts, a progress line at
    most every EVERY_S seconds, and a line when it closes; or nothing.

    Used like the tqdm bar it replaces: `update(n)`, `set_postfix(**values)`, `close()`;
    `unit` is singular (`episode`)."""

    def __init__(
        self,
        desc: str,
        total: int | None,
        progress: bool | None,
        unit: str = "step",
        initial: int = 0,
        at_most: bool = False,
    ) -> None:
        """`total` is what the phase will do, or with `at_most`, its budget (a collection
        that stops at its success quota)."""
        self.desc = desc
        self.unit = unit
        self.progress = progress
        self.total = total
        self.initial = initial
        self.done = 0  # in this phase (not counting `initial`)
        self.postfix: dict[str, Any] = {}
        self.start = clock()
        self.last_line = self.start
        self.bar = None
        if bars(progress):
            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, unit=unit)
        else:
            left = "" if total is None else f": {plural(total - initial, unit)}"
            left = left.replace(": ", ": at most ") if at_most else left
            say(f"  {desc}{left} …", progress)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = clock()
        if now - self.last_line >= EVERY_S:
            self.last_line = now
            say(self.progress_line(now), self.progress)

    def progress_line(self, now: float) -> str:
        """`  critic[2]: 120/400 steps, 2.1 steps/s, about 2 min 13 s left`."""
        rate = self.done / max(now - self.start, 1e-9)
        done = self.initial + self.done
        of = f"{done}/{self.total}" if self.total is not None else str(done)
        line = f"  {self.desc}: {of} {self.unit}s, {rate:.3g} {self.unit}s/s"
        if self.total is not None and rate > 0:
            line += f", about {duration(max(self.total - done, 0) / rate)} left"
        return line

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            return
        extra = ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        took = duration(clock() - self.start)
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
