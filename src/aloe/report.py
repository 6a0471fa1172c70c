"""Self-contained HTML reports: figures embedded as base64 PNG, tables, no external assets.

Run reports and comparison reports are built from these pieces, so that `aloe report DIR`
can rebuild either from what is on disk.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.n { text-align: right; } td { max-width: 30em; }
img { max-width: 100%; } .note { color: #666; font-size: 0.9em; }
.headline { background: #f5f8fc; border: 1px solid #cfdcec; border-radius: 6px;
  padding: 0.4em 1em; margin: 1em 0; } .headline p { margin: 0.35em 0; }
.headline .big { font-size: 1.35em; }
details { margin: 0.5em 0; } summary { cursor: pointer; color: #345; }
details table { display: block; overflow-x: auto; max-width: 100%; }
h3 { font-size: 1.05em; margin-top: 1.2em; }
"""


def figure_html(fig: Any, alt: str = "") -> str:
    """A matplotlib figure as an inline <img> (the figure is closed afterwards)."""
    import matplotlib.pyplot as plt  # late: only plots need matplotlib, slow to import

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def png_html(path: Path, alt: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.3g}"
    return html.escape("–" if value is None else str(value))


def _td(value: Any) -> str:
    """A cell: numbers right-aligned (class n), text left."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return f'<td class="n">{_cell(value)}</td>' if number else f"<td>{_cell(value)}</td>"


def table_html(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An HTML table of dict rows (columns default to the first row's keys)."""
    if not rows:
        return '<p class="note">(no rows)</p>'
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_td(r.get(c)) for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def details_html(summary: str, body: str) -> str:
    """A collapsed block: `summary` shown, `body` on a click."""
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def write_page(path: Path, title: str, sections: Sequence[tuple[str, str]], lead: str = "") -> Path:
    """Write a self-contained page of (heading, html body) sections, atomically; `lead`
    (html: the headline) comes first, under the title."""
    parts = [f"<h2>{html.escape(h)}</h2>\n{body}" for h, body in sections]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{lead}\n"
        + "\n".join(parts)
        + "</body></html>"
    )
    tmp = Path(path).with_suffix(".html.tmp")
    tmp.write_text(page)
    os.replace(tmp, path)
    return Path(path)
