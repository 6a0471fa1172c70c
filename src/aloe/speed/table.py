"""The bench's figures as a table: one column per revision and their ratio."""

from __future__ import annotations

from typing import Any

MISSING = "-"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def ratio(a: Any, b: Any) -> str:
    """a / b to two decimals; "-" where either is missing, not a number, or b is 0."""
    if not (_number(a) and _number(b)) or b == 0:
        return MISSING
    return f"{a / b:.2f}"


def render(columns: list[tuple[str, dict[str, Any]]]) -> str:
    """Flat figures ("a.b.c" -> value) of one or two columns, as aligned text: numbers in
    rows grouped by their first part (with a ratio column when there are two), text after."""
    names = list(dict.fromkeys(k for _, figures in columns for k in figures))
    numbers = [k for k in names if any(_number(f.get(k)) for _, f in columns)]
    header = ["figure", *(title for title, _ in columns)]
    if len(columns) == 2:
        header.append(f"{columns[0][0]}/{columns[1][0]}")
    rows = [header]
    section = None
    for name in numbers:
        if name.split(".")[0] != section and section is not None:
            rows.append([""] * len(header))
        section = name.split(".")[0]
        values = [f.get(name) for _, f in columns]
        rows.append([name, *map(_show, values), *([ratio(*values)] if len(columns) == 2 else [])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
    notes = [k for k in names if k not in numbers]
    for title, figures in columns:
        mine = [f"{title} {k}: {_show(figures[k])}" for k in notes if k in figures]
        lines += ["", *mine] if mine else []
    return "\n".join(lines)
