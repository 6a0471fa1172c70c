"""`aloe compare --backend ray`: a comparison's runs as Ray tasks give the local pool's runs."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray", reason="needs the ray extra: pip install 'aloe[ray]'")

from aloe.compare import CompareArgs, run_comparison  # noqa: E402

pytestmark = pytest.mark.slow


def metrics(out):
    """The bc run's metrics.jsonl rows without their wall time."""
    text = (out / "runs" / "bc-s0" / "metrics.jsonl").read_text()
    return [
        {k: v for k, v in json.loads(line).items() if k != "wall_s"} for line in text.splitlines()
    ]


def test_a_ray_comparison_matches_the_local_one(local_ray, tmp_path, same_metrics):
    runs = {}
    for backend in ("local", "ray"):
        args = CompareArgs(
            algos="bc",
            seeds=1,
            preset="smoke",
            out=tmp_path / backend,
            train_args="--bc-steps 10 --eval-episodes 1",
            backend=backend,
            progress=False,
        )
        summary = run_comparison(args)
        runs[backend] = metrics(args.out)
        assert summary["algos"]["bc"]["finished_seeds"] == [0]
    assert len(runs["ray"]) == 1  # BC: the warm start alone
    same_metrics(runs["ray"], runs["local"])
