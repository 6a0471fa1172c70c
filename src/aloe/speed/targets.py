"""Issue 33's targets beside the figures that answer them: pass or miss, per revision.

A target reads one figure of the flat report (`aloe.speed.against.flatten`), so a revision
measured with `--against` is marked by the same rule; a figure the run did not measure (a
size left out of --sizes, --compile not given) shows as "-". Targets that the bench does
not measure are listed with where they are measured instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from aloe.speed.table import MISSING


@dataclass(frozen=True)
class Target:
    """`figure` (a flat figure's name) `op` `bound`, shown in `unit`."""

    name: str
    figure: str
    op: Literal["<=", ">="]
    bound: float
    unit: str = ""

    def met(self, value: float) -> bool:
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def show(self, value: float) -> str:
        return f"{value:.3g}{self.unit}"


TARGETS = (
    Target("chunk inference p50, default size", "steps.default.inference.p50_ms", "<=", 5.0, " ms"),
    Target(
        "chunk inference compiled (--compile), default size",
        "steps.default.compile.inference.compiled_ms",
        "<=",
        5.0,
        " ms",
    ),
    Target(
        "V^π sampling / actor step, default size",
        "steps.default.actor_parts.value_sampling.share_of_step",
        "<=",
        0.30,
    ),
    Target(
        "critic step / matmul peak, paper size", "steps.paper.critic_step.peak_share", ">=", 0.60
    ),
    Target(
        "collection (actor's takeovers, inference excluded) / raw stepping",
        "loop.collect_policy.vs_raw_excl_inference",
        ">=",
        0.8,
    ),
)
ELSEWHERE = {
    "serving round trip <= inference + 2 ms": "not measured by the bench: "
    "benchmarks/serve_latency.py (docs/serving.md)",
    "a default run <= 0.5x the reference's wall time": "not measured by the bench: whole "
    "runs side by side (docs/speed.md); its estimate is iteration.run_estimate_s",
    "compiled and eager networks agree to 1e-5": "tested: tests/test_nn.py",
}


def check(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target's figure (None if not measured), the target in words, and whether it is
    met (None if not measured)."""
    out = {}
    for t in TARGETS:
        value = flat.get(t.figure)
        if not isinstance(value, int | float):
            value = None
        out[t.name] = {
            "figure": value,
            "target": f"{t.op} {t.bound:g}{t.unit}",
            "met": None if value is None else t.met(value),
        }
    return out


def render(columns: list[tuple[str, dict[str, Any]]]) -> str:
    """The targets as aligned text: a row per target, a column per revision ("6.1 ms miss"),
    then the targets measured elsewhere."""
    rows = [["issue 33's targets", *(title for title, _ in columns), "target"]]
    for t in TARGETS:
        cells = []
        for _, flat in columns:
            value = flat.get(t.figure)
            if isinstance(value, int | float):
                cells.append(f"{t.show(value)} {'pass' if t.met(value) else 'miss'}")
            else:
                cells.append(MISSING)
        rows.append([t.name, *cells, f"{t.op} {t.bound:g}{t.unit}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join([*lines, *(f"{name}: {where}" for name, where in ELSEWHERE.items())])
