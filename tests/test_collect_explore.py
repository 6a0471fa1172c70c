"""Collection-only exploration (`collect.explore_std`, issue 32 item 5)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aloe import collect as C
from aloe.collect import CollectConfig
from aloe.errors import UsageError
from aloe.policies.chunk_policy import ExploringPolicy


class Constant:
    """A policy whose every chunk is `value`; counts its resets."""

    version, exec_horizon = 3, 5

    def __init__(self, value: float = 0.0) -> None:
        self.value = value
        self.resets: list[int] = []

    def reset(self, seed: int) -> None:
        self.resets.append(seed)

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        return np.full((10, 4), self.value, np.float32)


def draws(policy: ExploringPolicy, seed: int, n: int = 50) -> np.ndarray:
    policy.reset(seed)
    return np.stack([policy.act_chunk({}) for _ in range(n)])


def test_noise_has_the_std_is_clipped_and_depends_on_the_episode_seed_alone() -> None:
    inner = Constant(0.0)
    explore = ExploringPolicy(inner, 0.1)
    assert (explore.version, explore.exec_horizon) == (3, 5)
    a = draws(explore, seed=7)
    assert a.dtype == np.float32 and abs(a.mean()) < 0.01 and a.std() == pytest.approx(0.1, 0.05)
    np.testing.assert_array_equal(a, draws(explore, seed=7))  # resume: same seed, same noise
    assert not np.allclose(a, draws(explore, seed=8))
    assert inner.resets == [7, 7, 8]  # π's own sampling is reseeded as without exploration
    wide = draws(ExploringPolicy(Constant(0.9), 5.0), seed=0)
    assert wide.min() >= -1.0 and wide.max() <= 1.0 and (wide == 1.0).any()


def test_collect_episode_wraps_the_policy_only_when_exploring(monkeypatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(C, "run_episode", lambda *a, policy, **kw: seen.append(policy))
    policy = Constant()
    for std in (0.0, 0.3):
        C.collect_episode(None, None, 0, policy, CollectConfig(explore_std=std), 1)  # type: ignore[arg-type]
    C.collect_episode(None, None, 0, None, CollectConfig(explore_std=0.3), 0)  # type: ignore[arg-type]
    assert seen[0] is policy
    assert isinstance(seen[1], ExploringPolicy) and seen[1].std == 0.3
    assert seen[2] is None  # a demonstration has no policy to perturb


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_a_bad_explore_std_is_refused_naming_the_field(bad: float) -> None:
    with pytest.raises(UsageError, match="collect.explore_std"):
        CollectConfig(explore_std=bad).validate()
