"""`aloe.update_sampler`: with one-step the update's a' (Eq. 7) and V^π's chunks (Eq. 10)
come from μ, trained after every actor and BC step and checkpointed with the learner
(resume is exact); with flow (the default) nothing changes; the settings are checked."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from aloe import checkpoint
from aloe.algos.aloe import AloeConfig, AloeLearner
from aloe.algos.aloe_config import check_lerobot
from aloe.algos.optimised import OptimConfig
from aloe.cli_runs import read_train_args
from aloe.config import preset
from aloe.critics.chunked_q import ChunkedQCritic, CriticConfig
from aloe.errors import UsageError
from aloe.policies.flow import ActorConfig, FlowPolicy
from aloe.speed.learner import synthetic_batch

S, A, H, BATCH = 5, 2, 3, 6


def learner(config: AloeConfig, seed: int = 0) -> AloeLearner:
    torch.manual_seed(seed)
    actor = FlowPolicy(ActorConfig(hidden_dim=16, num_layers=1, num_heads=2), S, A, 1, horizon=H)
    critic = ChunkedQCritic(
        CriticConfig(hidden_dim=16, num_layers=1, num_heads=2, num_q=2), S, A, 1, horizon=H
    )
    return AloeLearner(actor, critic, config, OptimConfig(batch_size=BATCH, warmup_steps=2))


ONE_STEP = AloeConfig(update_sampler="one-step", onestep_hidden_dim=32, onestep_layers=2)


def batch(seed: int) -> Any:
    return synthetic_batch(BATCH, S, H, A, seed=seed)


def steps(lrn: AloeLearner, seeds: range) -> list[dict[str, float]]:
    """A critic step then an actor step on each seed's batch."""
    return [m for s in seeds for m in (lrn.critic_step(batch(s)), lrn.actor_step(batch(s)))]


def test_one_step_draws_the_updates_chunks_and_the_actor_only_its_targets() -> None:
    """a' and V^π's chunks come from μ (the actor's `sample` is never called); each actor
    step ends with a step of μ towards the flow, logged under onestep/."""
    lrn = learner(ONE_STEP)
    assert lrn.onestep is not None and lrn.update_policy is lrn.onestep

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the update sampled the flow")

    lrn.actor.sample = refuse  # type: ignore[method-assign]
    before = [p.clone() for p in lrn.onestep.parameters()]
    critic, actor = steps(lrn, range(1))
    assert not any(k.startswith("onestep/") for k in critic)
    assert {"onestep/mse", "onestep/rel_err", "onestep/grad_norm", "onestep/lr"} <= set(actor)
    after = lrn.onestep.parameters()
    assert all(not torch.equal(p, q) for p, q in zip(before, after, strict=True))


def test_the_warm_start_distils_at_every_kth_bc_step() -> None:
    lrn = learner(dataclasses.replace(ONE_STEP, onestep_bc_every=3))
    distilled = ["onestep/mse" in lrn.bc_step(batch(i)) for i in range(6)]
    assert distilled == [False, False, True, False, False, True]


def test_distillation_brings_the_one_step_sampler_to_the_flow() -> None:
    """On a fixed actor, μ's relative error on a batch of 64 falls from 1.24 to < 0.25 in
    150 steps at its own rate (measured 0.12; aloe.onestep_lr)."""
    lrn = learner(dataclasses.replace(ONE_STEP, onestep_hidden_dim=64))
    b = synthetic_batch(64, S, H, A, seed=0)
    first = lrn.distil_step(b)["onestep/rel_err"]
    for _ in range(150):
        last = lrn.distil_step(b)["onestep/rel_err"]
    assert first > 1 and last < 0.25


def test_auto_is_one_step_for_the_compact_flow_actor() -> None:
    """The default, auto: μ for the compact flow actor, the same learner as one-step's."""
    auto = learner(dataclasses.replace(ONE_STEP, update_sampler="auto"))
    one = learner(ONE_STEP)
    assert auto.onestep is not None and auto.update_policy is auto.onestep
    assert str(steps(auto, range(2))) == str(steps(one, range(2)))


def test_flow_changes_nothing_and_reads_no_one_step_size() -> None:
    """With update_sampler flow, μ's size fields are never read: the same steps give the
    same weights, metrics and generator, and no μ is built or saved."""
    flow = AloeConfig(update_sampler="flow")
    plain = learner(flow)
    sized = learner(
        dataclasses.replace(
            flow, onestep_hidden_dim=7, onestep_layers=5, onestep_bc_every=2, onestep_lr=1.0
        )
    )
    assert plain.onestep is None and plain.update_policy is plain.actor
    assert str(steps(plain, range(2))) == str(steps(sized, range(2)))
    a, b = plain.state_dict(), sized.state_dict()
    assert a.keys() == b.keys() and not any(k.startswith("onestep") for k in a)
    assert torch.equal(a["generator"], b["generator"])
    assert all(torch.equal(x, b["actor"][k]) for k, x in a["actor"].items())


def test_a_one_step_learner_resumes_exactly(tmp_path: Path) -> None:
    """Through a checkpoint on disk, into a learner built from other random weights: μ, its
    optimiser and schedule come back, and the next steps are bit-identical."""
    whole = learner(ONE_STEP)
    steps(whole, range(2))
    checkpoint.save(tmp_path, 0, {"learner": whole.state_dict()})
    resumed = learner(ONE_STEP, seed=1)
    resumed.load_state_dict(checkpoint.load(checkpoint.latest(tmp_path)[1])["learner"])
    assert str(steps(resumed, range(2, 4))) == str(steps(whole, range(2, 4)))
    for key in ("onestep", "onestep_optim", "actor", "critic"):
        assert str(resumed.state_dict()[key]) == str(whole.state_dict()[key]), key


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "update_sampler",
            "two-step",
            "aloe.update_sampler ('two-step'): must be auto, flow or one-step",
        ),
        ("onestep_hidden_dim", 0, "aloe.onestep_hidden_dim (0): must be >= 1"),
        ("onestep_layers", 0, "aloe.onestep_layers (0): must be >= 1"),
        ("onestep_bc_every", 0, "aloe.onestep_bc_every (0): must be >= 1"),
        ("onestep_lr", 0.0, "aloe.onestep_lr (0.0): must be > 0"),
    ],
)
def test_bad_one_step_settings_are_refused_naming_the_field(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises(UsageError) as e:
        dataclasses.replace(AloeConfig(), **{field: value}).validate()
    assert str(e.value) == message


def test_one_step_with_a_lerobot_actor_is_refused() -> None:
    cfg = preset("smoke")
    cfg.actor_kind = "lerobot"
    cfg.aloe.update_sampler = "one-step"
    with pytest.raises(UsageError, match=r"^config field aloe.update_sampler \('one-step'\): "):
        cfg.validate()


def test_auto_with_a_lerobot_actor_passes_the_check() -> None:
    """auto means flow for a LeRobot VLA, so the default needs no flag there."""
    cfg = preset("smoke").aloe
    assert cfg.update_sampler == "auto"
    check_lerobot(cfg)
    check_lerobot(dataclasses.replace(cfg, update_sampler="flow"))


def test_the_flag_sets_it_auto_is_the_default_and_the_paper_preset_samples_pi() -> None:
    argv = ["--preset", "smoke", "--aloe.update-sampler", "one-step"]
    assert read_train_args(argv, "aloe train").config.aloe.update_sampler == "one-step"
    for name, want in (("smoke", "auto"), ("default", "auto"), ("paper", "flow")):
        got = read_train_args(["--preset", name], "aloe train").config.aloe.update_sampler
        assert got == want, name
