"""The per-iteration updates' contract: how many batches each pulls, from which sampler, in
which order (Algorithm 1, lines 4–15 for ALOE); and the algorithm table's rows."""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

import numpy as np
import pytest
import torch

from aloe import data as D
from aloe.algos import aloe, awr, dagger
from aloe.algos.aloe import AloeConfig, AloeLearner
from aloe.algos.awr import AwrConfig, AwrLearner, value_critic
from aloe.algos.context import UpdateContext
from aloe.algos.table import ALGORITHMS
from aloe.config import ALGOS, PRESETS, TrainConfig, preset
from aloe.critics.chunked_q import ChunkedQCritic, CriticConfig
from aloe.observation import Observations
from aloe.policies.flow import ActorConfig, FlowPolicy
from aloe.run import build_learner
from aloe.speed.learner import synthetic_batch

S, A, H = 5, 2, 3
N_Q, N_PI, BATCH = 7, 4, 6


def config(algo: str) -> Any:
    cfg = preset("smoke")
    cfg.algo, cfg.progress = algo, False
    cfg.optim = dataclasses.replace(cfg.optim, batch_size=BATCH)
    cfg.aloe = dataclasses.replace(cfg.aloe, critic_steps=N_Q, actor_steps=N_PI)
    cfg.awr = dataclasses.replace(cfg.awr, value_steps=N_Q, actor_steps=N_PI)
    cfg.dagger = dataclasses.replace(cfg.dagger, steps=N_PI)
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
    return AwrLearner(actor(), critic, AwrConfig(num_bins=11), (-10.0, 0.0))


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


def context(algo: str, learner: Any, log: Log) -> UpdateContext[Any]:
    cfg = config(algo)
    return UpdateContext(cfg, ALGORITHMS[algo].settings(cfg), 3, frames(), learner, log.sampler)


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
    assert ALGOS == ("aloe", "awr", "dagger", "bc", "ppo-sbc", "recap") == tuple(ALGORITHMS)
    rows = ALGORITHMS
    assert [a for a, r in rows.items() if r.with_operator] == ["aloe", "awr", "dagger", "recap"]
    assert [a for a, r in rows.items() if not r.iterates] == ["bc"]
    cfg = config("recap")  # RECAP's value is its advantage source's (tests/algos/test_recap)
    assert {a: r.value_kind(cfg) for a, r in rows.items()} == {
        "aloe": "q",
        "awr": "state",
        "dagger": None,
        "bc": None,
        "ppo-sbc": "state",
        "recap": "state",  # recap.advantage value, the default
    }
    assert [a for a, r in rows.items() if r.labels_at] == ["recap"]
    assert [a for a, r in rows.items() if r.weighted] == ["aloe", "awr"]
    assert [a for a, r in rows.items() if r.matched_budget] == ["ppo-sbc"]
    cfg = config("ppo-sbc")
    cfg.ppo = dataclasses.replace(cfg.ppo, minibatch_size=40, bc_batch_size=8)
    assert rows["ppo-sbc"].update_batch(cfg.optim, cfg.ppo) == (48, "ppo.minibatch_size")
    assert rows["aloe"].update_batch(cfg.optim, cfg.aloe) == (BATCH, "optim.batch_size")
    assert [a for a, r in rows.items() if r.sharding] == ["aloe", "dagger", "bc"]  # DDP
    assert [a for a, r in rows.items() if r.trains_actor] == [
        "aloe",
        "awr",
        "dagger",
        "bc",
        "recap",
    ]


def test_each_row_names_its_settings_field_and_preset() -> None:
    """A row's `group` is a field of the run's config holding its `config`, which its
    `preset` fills for every preset; `bc` alone has no settings of its own."""
    hints = get_type_hints(TrainConfig)
    assert [a for a, r in ALGORITHMS.items() if r.group is None] == ["bc"]
    for row in ALGORITHMS.values():
        if row.group is None:
            continue
        assert row.config is not None and row.preset is not None
        assert hints[row.group] is row.config
        for name in PRESETS:
            assert isinstance(row.settings(preset(name)), row.config)
            assert row.settings(preset(name)) == row.preset(name)


def test_aloe_settings_change_nothing_in_another_algorithms_run() -> None:
    """Every `aloe.*` field changed: another algorithm's learner is built the same, and its
    update (real steps on fixed batches) ends in the same weights and metrics; it reads its
    own settings and `optim.*`, never ALOE's."""
    changed = AloeConfig(
        beta=1.0,
        eps_clip=1.0,
        num_value_samples=3,
        value_steps="data",
        polyak=0.5,
        critic_steps=1,
        critic_updates_per_step=0.5,
        actor_steps=1,
        target_reduce="mean",
        normalize_advantage=True,
        advantage="lcb",
        lcb_kappa=2.0,
        best_of_n=3,
        best_of_n_reduce="mean",
        best_of_n_target=True,
        accept_margin=1.0,
        accept_states=8,
        update_sampler="one-step",
        onestep_hidden_dim=8,
        onestep_layers=1,
        onestep_bc_every=2,
        onestep_lr=1e-2,
    )
    assert all(getattr(changed, f.name) != f.default for f in dataclasses.fields(AloeConfig))
    for algo in ("awr", "dagger", "bc", "ppo-sbc", "recap"):
        runs = [_run_with(algo, settings) for settings in (AloeConfig(), changed)]
        (state, metrics), (state2, metrics2) = runs
        assert state.keys() == state2.keys(), algo
        for key in state:
            assert _same(state[key], state2[key]), (algo, key)
        assert str(metrics) == str(metrics2), algo


def _run_with(algo: str, settings: AloeConfig) -> tuple[dict[str, Any], dict[str, float]]:
    """The `algo` learner built from the smoke preset with `aloe` = settings, and (for AWR and
    HG-DAgger) one update of two steps of each kind on fixed synthetic batches."""
    cfg = preset("smoke", "reach-v3")
    cfg.algo = algo
    cfg.progress = False
    cfg.aloe = settings
    cfg.awr = dataclasses.replace(cfg.awr, value_steps=2, actor_steps=2)
    cfg.dagger = dataclasses.replace(cfg.dagger, steps=2)
    cfg = cfg.resolved()
    obs = Observations(cfg, "cpu")
    torch.manual_seed(0)
    learner = build_learner(cfg, obs=obs)
    row = ALGORITHMS[algo]
    metrics = {}
    if algo in ("awr", "dagger"):
        draws = iter(range(100))

        class Fixed:
            def sample(self, n: int) -> Any:
                return synthetic_batch(n, obs.dim, cfg.horizon, seed=next(draws))

        ctx = UpdateContext(cfg, row.settings(cfg), 1, frames(), learner, lambda f: Fixed())
        assert row.update is not None
        metrics = row.update(ctx)
    return learner.state_dict(), metrics


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return bool(a == b)
