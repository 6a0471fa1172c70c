"""The one error convention of aloe: a user's mistake is a `UsageError`.

The CLI prints it as one line on stderr, `aloe CMD: error: <what> (<the value>): <what is
allowed or what to do>`, and exits 2. Anything else is an internal failure: it keeps its
traceback and exits 1. `UsageError` is a `ValueError`, so library callers that catch
`ValueError` keep working.

This module imports nothing from aloe: every layer may raise it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

_NO_VALUE = object()


class UsageError(ValueError):
    """A bad argument, config field, path or file given by the user."""


def bad(what: str, value: Any = _NO_VALUE, allowed: str = "") -> UsageError:
    """`bad("--seed", -1, "must be >= 0")` -> UsageError("--seed (-1): must be >= 0")."""
    text = what if value is _NO_VALUE else f"{what} ({_show(value)})"
    return UsageError(f"{text}: {allowed}" if allowed else text)


def require(ok: bool, what: str, value: Any = _NO_VALUE, allowed: str = "") -> None:
    """Raise `bad(what, value, allowed)` unless `ok`."""
    if not ok:
        raise bad(what, value, allowed)


def require_finite(what: str, value: float) -> None:
    """Refuse inf and nan, which JSON cannot hold and no update can use."""
    require(
        isinstance(value, int | float) and math.isfinite(value),
        what,
        value,
        "must be a finite number",
    )


def _show(value: Any) -> str:
    if isinstance(value, Path):
        return str(value)
    return repr(value) if isinstance(value, str) else str(value)
