"""The documented Python example runs, and docs/usage.md shows it as it is."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "train_from_python.py"


def test_usage_shows_the_example_as_it_is():
    usage = (ROOT / "docs" / "usage.md").read_text()
    assert f"```python\n{EXAMPLE.read_text().rstrip()}\n```" in usage


@pytest.mark.slow
def test_the_train_from_python_example_trains_logs_evaluates_and_loads(tmp_path):
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, str(EXAMPLE), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == (
        "refused as `aloe train` refuses it: config field eval_episodes (0): must be >= 1"
    )
    assert [line.split(":")[0] for line in lines[1:4]] == [
        "iteration 0",
        "iteration 1",
        "iteration 2",
    ]
    with (tmp_path / "run.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["iteration"] for r in rows] == ["0", "1", "2"]
    assert json.loads((out / "eval-basic.json").read_text())["episodes"] == 4
    assert lines[-1].startswith("π's chunks (4, 10, 4); V^π(s) = ")
    float(lines[-1].rsplit("= ", 1)[1])  # one state in, one number out
