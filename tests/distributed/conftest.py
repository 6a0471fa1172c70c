"""One local Ray (`ray.init(num_cpus=2)`, as in CI) for every Ray test of the session."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def local_ray():
    ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'aloe[ray]'")
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
