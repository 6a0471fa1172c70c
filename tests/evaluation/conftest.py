"""Fixtures of the evaluation tests."""

import pytest
from known_replays import recorded_buffer


@pytest.fixture(scope="module")
def recorded():
    """known_replays.recorded_buffer(), recorded once per test module."""
    return recorded_buffer()
