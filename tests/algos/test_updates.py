"""The per-iteration updates' contract: how many batches each pulls, from which sampler, in
which order (Algorithm 1, lines 4–15 for ALOE); and the algorithm table's rows."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from aloe import data as D
from aloe.algos import aloe, awr, dagger
from aloe.algos.aloe import AloeConfig, AloeLearner
from aloe.algos.awr import AwrConfig, AwrLearner, value_critic
from aloe.algos.context import UpdateContext
from aloe.algos.table import ALGORITHMS
from aloe.config import ALGOS, preset
from aloe.critics.chunked_q import ChunkedQCritic, CriticConfig
from aloe.policies.flow import ActorConfig, FlowPolicy

S, A, H = 5, 2, 3
N_Q, N_PI, BATCH = 7, 4, 6


def config(algo: str) -> Any:
    cfg = preset("smoke")
    cfg.algo, cfg.progress = algo, False
    cfg.aloe = dataclasses.replace(cfg.aloe, critic_steps=N_Q, actor_steps=N_PI, batch_size=BATCH)
    cfg.awr = dataclasses.replace(cfg.awr, value_steps=N_Q, actor_steps=N_PI)
    return cfg


def actor() -> FlowPolicy:
    torch.manual_seed(0)
    return FlowPolicy(ActorConfig(hidden_dim=16, num_layers=1, num_heads=2), S, A, 1, horizon=H)


def aloe_learner() -> AloeLearner:
    critic = ChunkedQCritic(
        CriticConfig(hidden_dim=16, num_layers=1, num_heads=2, num_q=2), S, A, 1, horizon=H
    )
    return AloeLearner(actor(), critic, AloeConfig())


def awr_learner() -> AwrLearner:
    critic = value_critic(CriticConfig(hidden_dim=16, num_layers=1, num_heads=2), S, 1, 11)
    return AwrLearner(actor(), critic, AloeConfig(), AwrConfig(num_bins=11), (-10.0, 0.0))


class Log:
    """Which sampler each batch came from and which step consumed it, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.samplers: list[D.Frames] = []

    def sampler(self, frames: D.Frames) -> Any:
        log, index = self, len(self.samplers)
        self.samplers.append(frames)

        class Counting:
            def sample(self, batch_size: int) -> tuple[int, int]:
                log.events.append(("sample", (index, batch_size)))
                return (index, batch_size)

        return Counting()

    def step(self, name: str, keys: Any) -> Any:
        def step(batch: Any) -> dict[str, float]:
            self.events.append((name, batch))
            return dict.fromkeys(keys, 1.0)

        return step

    def consumed(self) -> list[tuple[str, Any]]:
        """The steps, each with the (sampler, batch size) of the batch it got."""
        return [e for e in self.events if e[0] != "sample"]


def frames(rows: int = 10) -> D.Frames:
    episode = np.repeat([0, 1], rows // 2)
    success = np.zeros(rows, bool)
    success[rows // 2 - 1] = True  # episode 0 succeeds, episode 1 fails
    return D.Frames(
        {
            D.EPISODE: episode,
            D.FRAGMENT: np.zeros(rows, int),
            D.SOURCE: np.array(["demo"] * rows, dtype=object),
            D.SUCCESS: success,
            D.ACTION: np.zeros((rows, A), np.float32),
        }
    )


def context(algo: str, learner: Any, log: Log) -> UpdateContext:
    return UpdateContext(config(algo), 3, frames(), learner, log.sampler)


def test_one_aloe_iteration_pulls_n_q_critic_then_n_pi_actor_batches() -> None:
    learner, log = aloe_learner(), Log()
    learner.critic_step = log.step("critic", aloe.CRITIC_METRICS.values())  # type: ignore[method-assign]
    learner.actor_step = log.step("actor", aloe.ACTOR_METRICS.values())  # type: ignore[method-assign]
    row = aloe.update(context("aloe", learner, log))
    assert log.consumed() == [("critic", (0, BATCH))] * N_Q + [("actor", (0, BATCH))] * N_PI
    assert len(log.samplers) == 1 and log.samplers[0].rows == 10  # the whole buffer
    assert [e for e, _ in log.events].count("sample") == N_Q + N_PI
    assert list(row) == list(aloe.UPDATE_COLUMNS) and all(v == 1.0 for v in row.values())


def test_one_awr_iteration_pulls_its_value_then_actor_batches() -> None:
    learner, log = awr_learner(), Log()
    learner.value_step = log.step("value", awr.VALUE_METRICS.values())  # type: ignore[method-assign]
    learner.actor_step = log.step("actor", awr.ACTOR_METRICS.values())  # type: ignore[method-assign]
    row = awr.update(context("awr", learner, log))
    assert log.consumed() == [("value", (0, BATCH))] * N_Q + [("actor", (0, BATCH))] * N_PI
    assert list(row) == list(aloe.UPDATE_COLUMNS)  # ALOE's columns, read from V(s)


def test_one_dagger_iteration_pulls_n_pi_bc_batches_of_its_rows() -> None:
    learner, log = aloe_learner(), Log()
    learner.bc_step = log.step("bc", ["bc/loss"])  # type: ignore[method-assign]
    row = dagger.update(context("dagger", learner, log))
    assert log.consumed() == [("bc", (0, BATCH))] * N_PI
    assert log.samplers[0].rows == 5 == row["dagger_rows"]  # the successful demonstration
    assert row["bc_loss"] == 1.0 and all(np.isnan(row[c]) for c in aloe.UPDATE_COLUMNS)


def test_an_update_refuses_another_algorithms_learner() -> None:
    with pytest.raises(TypeError, match="algo awr needs a AwrLearner, got AloeLearner"):
        awr.update(context("awr", aloe_learner(), Log()))


def test_the_table_names_every_algorithm_once() -> None:
    assert ALGOS == ("aloe", "awr", "dagger", "bc", "ppo-sbc") == tuple(ALGORITHMS)
    rows = ALGORITHMS
    assert [a for a, r in rows.items() if r.with_operator] == ["aloe", "awr", "dagger"]
    assert [a for a, r in rows.items() if not r.iterates] == ["bc"]
    assert {a: r.value for a, r in rows.items()} == {
        "aloe": "q",
        "awr": "state",
        "dagger": None,
        "bc": None,
        "ppo-sbc": "state",
    }
    assert [a for a, r in rows.items() if r.weighted] == ["aloe", "awr"]
    assert [a for a, r in rows.items() if r.matched_budget] == ["ppo-sbc"]
    cfg = config("ppo-sbc")
    cfg.ppo = dataclasses.replace(cfg.ppo, minibatch_size=40, bc_batch_size=8)
    assert rows["ppo-sbc"].update_batch(cfg) == (48, "ppo.minibatch_size")
    assert rows["aloe"].update_batch(cfg) == (BATCH, "aloe.batch_size")
