"""A run's report.html as a run ends (`aloe train`, `aloe eval`): a failure is a warning on
stderr, never a failed run."""

from __future__ import annotations

import sys
from pathlib import Path

from aloe.evaluation import report


def write_report(run_dir: Path, prog: str) -> Path | None:
    """Write `run_dir/report.html` (aloe.evaluation.report); on any failure, warn on stderr
    and return None: the report is derived from the run, whose results are already safe."""
    try:
        return report.build_run_report(run_dir)
    except Exception as e:  # noqa: BLE001 (a report is never worth a finished run)
        print(
            f"{prog}: warning: could not write {Path(run_dir) / 'report.html'} "
            f"({type(e).__name__}: {e}); `aloe report {run_dir}` retries",
            file=sys.stderr,
        )
        return None
