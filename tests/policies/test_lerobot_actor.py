"""The LeRobot adapter on a tiny random SmolVLA built offline in the test (no download).

Skipped where lerobot is not importable (the README's plain install); `.ci/run` installs it
in a virtualenv of its own and runs this file there. lerobot (and with it torchvision) is
imported before aloe: PyPI's torchvision segfaults when imported after MuJoCo has loaded
OSMesa (MUJOCO_GL=osmesa), and loads fine before it.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch

if importlib.util.find_spec("lerobot") is None:
    pytest.skip("lerobot is not installed (see README: the lerobot extra)", allow_module_level=True)

import lerobot.policies.smolvla.modeling_smolvla  # noqa: E402, F401  (before aloe, see above)

from aloe import checkpoint  # noqa: E402
from aloe.errors import UsageError  # noqa: E402
from aloe.policies.base import Actor  # noqa: E402
from aloe.policies.lerobot_actor import build_actor  # noqa: E402
from aloe.policies.lerobot_config import LeRobotConfig  # noqa: E402
from aloe.policies.lerobot_tiny import write_tiny_smolvlm  # noqa: E402
from aloe.policies.lerobot_vision import LeRobotVisionTower, policy_tower, vision_tower  # noqa: E402

S, A, H, B = 39, 4, 6, 5
TASKS = ["pick the puck and place it at the goal", "press the button"]


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    return write_tiny_smolvlm(tmp_path_factory.mktemp("vlm"))


def make_actor(vlm, seed=0):
    torch.manual_seed(seed)
    cfg = LeRobotConfig(vlm=str(vlm), num_flow_steps=3)
    return build_actor(cfg, TASKS, state_dim=S, action_dim=A, horizon=H)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    state = torch.randn(B, S, generator=g)
    actions = torch.rand(B, H, A, generator=g) * 2 - 1
    return state, torch.tensor([0, 1, 0, 1, 1]), actions, torch.ones(B, H)


def test_is_an_actor_with_per_task_tokens(vlm):
    actor = make_actor(vlm)
    assert isinstance(actor, Actor)
    assert actor.tokens.shape[0] == len(TASKS)
    assert not torch.equal(actor.tokens[0], actor.tokens[1])


def test_loss_equals_lerobots_mean_on_real_action_dims(vlm):
    """Weights all 1: the batch mean of the adapter's loss is LeRobot's own mean loss over
    the real action dimensions, at the same noise and time."""
    actor = make_actor(vlm)
    state, task, actions, valid = batch()
    loss = actor.flow_loss_per_sample(state, task, actions, valid, torch.Generator().manual_seed(3))
    assert loss.shape == (B,)
    g = torch.Generator().manual_seed(3)  # the same draws, in the adapter's order
    full, _ = actor.padded(actions, valid)
    noise = torch.randn(full.shape, generator=g)
    time = actor.lerobot_time(B, g)
    inputs = {**actor.lerobot_inputs(state, task), "action": full}
    images, masks = actor.policy.prepare_images(inputs)
    own = actor.policy.model.forward(
        images,
        masks,
        inputs["observation.language.tokens"],
        inputs["observation.language.attention_mask"],
        actor.policy.prepare_state(inputs),
        full,
        noise,
        time,
    )
    torch.testing.assert_close(loss.mean(), own[:, :H, :A].mean(), rtol=1e-5, atol=1e-6)
    loss.mean().backward()  # differentiable, through the trainable action expert
    assert any(p.grad is not None for p in actor.parameters())


def test_padding_does_not_change_the_loss(vlm):
    actor = make_actor(vlm)
    state, task, actions, valid = batch()
    valid[:, 4:] = 0
    padded = actions.clone()
    padded[:, 4:] = 7.0  # whatever lies in padded steps does not count
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = actor.flow_loss_per_sample(state, task, actions, valid, g1)
    b = actor.flow_loss_per_sample(state, task, padded, valid, g2)
    torch.testing.assert_close(a, b)


def test_same_seed_same_chunks_and_rows_sample_as_alone(vlm):
    actor = make_actor(vlm)
    state, task, _, _ = batch()
    one = actor.sample(state, task, 2, torch.Generator().manual_seed(5))
    two = actor.sample(state, task, 2, torch.Generator().manual_seed(5))
    assert one.shape == (B, 2, H, A) and one.abs().max() <= 1.0
    torch.testing.assert_close(one, two, rtol=0, atol=0)
    gens = [torch.Generator().manual_seed(10 + i) for i in range(B)]
    rows = actor.sample(state, task, 1, gens)
    alone = actor.sample(state[1:2], task[1:2], 1, torch.Generator().manual_seed(11))
    torch.testing.assert_close(rows[1], alone[0], rtol=1e-5, atol=1e-6)


def test_num_steps_sets_lerobots_euler_steps_for_the_call(vlm):
    """`sample(..., num_steps=k)` integrates in k steps and leaves the config as it was."""
    actor = make_actor(vlm)
    state, task, _, _ = batch()
    config = actor.policy.model.config
    own = config.num_steps
    seen = []
    sample_actions = actor.policy.model.sample_actions

    def spy(*args, **kwargs):
        seen.append(config.num_steps)
        return sample_actions(*args, **kwargs)

    actor.policy.model.sample_actions = spy
    one = actor.sample(state, task, 1, torch.Generator().manual_seed(5), num_steps=1)
    same = actor.sample(state, task, 1, torch.Generator().manual_seed(5), num_steps=own)
    default = actor.sample(state, task, 1, torch.Generator().manual_seed(5))
    assert seen == [1, own, own] and config.num_steps == own
    torch.testing.assert_close(same, default, rtol=0, atol=0)
    assert not torch.equal(one, default)


def test_save_load_gives_identical_outputs(vlm, tmp_path):
    actor = make_actor(vlm, seed=0)
    path = checkpoint.save(tmp_path, 1, {"actor": actor.state_dict()})  # safetensors + JSON
    other = make_actor(vlm, seed=1)  # different init, overwritten by the file
    other.load_state_dict(checkpoint.load(path)["actor"])
    state, task, actions, valid = batch()
    for f in (
        lambda m, g: m.sample(state, task, 1, g),
        lambda m, g: m.flow_loss_per_sample(state, task, actions, valid, g),
    ):
        torch.testing.assert_close(
            f(actor, torch.Generator().manual_seed(2)),
            f(other, torch.Generator().manual_seed(2)),
            rtol=0,
            atol=0,
        )


def test_checkpoints_of_a_pretrained_vla_skip_its_frozen_weights(vlm, tmp_path):
    """Through the optimiser's state_dict (what every checkpoint holds): the frozen VLM of a
    pretrained checkpoint is left out, a digest in its place; loading it back into an actor
    built from the same checkpoint gives identical outputs, from another one is refused."""
    import dataclasses

    from aloe.algos.optimised import OptimConfig, OptimisedModule

    make_actor(vlm, seed=0).policy.save_pretrained(tmp_path / "a")
    make_actor(vlm, seed=1).policy.save_pretrained(tmp_path / "b")
    cfg = dataclasses.replace(
        LeRobotConfig(pretrained=str(tmp_path / "a"), vlm=str(vlm)), num_flow_steps=2
    )

    def built(pretrained):
        c = dataclasses.replace(cfg, pretrained=str(tmp_path / pretrained))
        return build_actor(c, TASKS, state_dim=S, action_dim=A, horizon=H)

    actor = built("a")
    frozen = actor.frozen_keys()
    assert frozen and all(".vlm_with_expert.vlm." in k for k in frozen)  # the VLM backbone
    opt = OptimisedModule(actor, 1e-3, OptimConfig())
    state, task, actions, valid = batch()
    opt.step(actor.flow_loss_per_sample(state, task, actions, valid).mean(), {}, "actor")
    saved = opt.state_dict("actor")
    path = checkpoint.save(tmp_path / "ckpt", 1, {"learner": saved})
    kept = saved["actor"]
    assert not set(frozen) & set(kept) and kept["frozen_sha256"] == actor.frozen_digest()
    full = sum(t.numel() for t in actor.state_dict().values())
    assert sum(t.numel() for t in kept.values() if torch.is_tensor(t)) < full

    other = built("a")
    OptimisedModule(other, 1e-3, OptimConfig()).load_state_dict(
        checkpoint.load(path)["learner"], "actor"
    )
    g = [torch.Generator().manual_seed(2) for _ in range(2)]
    torch.testing.assert_close(
        actor.sample(state, task, 1, g[0]), other.sample(state, task, 1, g[1]), rtol=0, atol=0
    )
    with pytest.raises(UsageError, match=r"lerobot.pretrained .*not the ones the checkpoint"):
        built("b").load_checkpoint_state(checkpoint.load(path)["learner"]["actor"])
    fresh = make_actor(vlm)  # a fresh VLA's random weights are all kept
    assert set(fresh.checkpoint_state()) == set(fresh.state_dict())


def test_the_vla_reads_each_cameras_pixels_in_its_own_slot(vlm, tmp_path):
    """With cameras, camera i fills image slot i as (B, 3, H, W) in [0, 1]: the same noise
    gives other chunks and another loss for other pixels, images are required, and a
    checkpoint with fewer slots than cameras is refused by name."""
    torch.manual_seed(0)
    cfg = LeRobotConfig(vlm=str(vlm), num_flow_steps=2)
    actor = build_actor(
        cfg, TASKS, state_dim=S, action_dim=A, horizon=H, cameras=("corner", "topview")
    )
    assert actor.image_keys == ["observation.images.corner", "observation.images.topview"]
    state, task, actions, valid = batch()
    rng = np.random.default_rng(0)
    images = torch.as_tensor(rng.integers(0, 256, (B, 2, 24, 24, 3), dtype=np.uint8))
    inputs = actor.lerobot_inputs(state, task, images)
    key = "observation.images.topview"
    assert inputs[key].shape == (B, 3, 24, 24) and bool(inputs[f"{key}_padding_mask"].all())
    assert torch.equal(inputs[key][1, 2], images[1, 1, :, :, 2].float() / 255)

    def chunks(pixels):
        return actor.sample(state, task, 1, torch.Generator().manual_seed(3), images=pixels)

    def loss(pixels):
        g = torch.Generator().manual_seed(3)
        return actor.flow_loss_per_sample(state, task, actions, valid, g, images=pixels)

    other = images.clone()
    other[:, 1] = 255 - other[:, 1]  # only the second camera changes
    assert torch.equal(chunks(images), chunks(images))
    assert not torch.allclose(chunks(images), chunks(other))
    assert not torch.allclose(loss(images), loss(other))
    with pytest.raises(ValueError, match="reads cameras"):
        actor.sample(state, task, 1)
    actor.policy.save_pretrained(tmp_path / "two-slots")
    pre = LeRobotConfig(pretrained=str(tmp_path / "two-slots"), vlm=str(vlm))
    with pytest.raises(UsageError, match="--vision.cameras.*image slots"):
        build_actor(
            pre,
            TASKS,
            state_dim=S,
            action_dim=A,
            horizon=H,
            cameras=("corner", "topview", "corner2"),
        )


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(UsageError, match=r"lerobot.policy \('pix'\): must be one of"):
        LeRobotConfig(policy="pix", vlm=str(tmp_path)).validate()
    with pytest.raises(UsageError, match=r"lerobot.pretrained \(None\): pi0 needs a pretrained"):
        LeRobotConfig(policy="pi0").validate()
    with pytest.raises(UsageError, match=r"lerobot.vlm \(.*\): has no config.json"):
        LeRobotConfig(vlm=str(tmp_path)).validate()


def test_vision_tower_features_are_the_towers_and_its_identity_follows_its_weights(vlm):
    """`--vision.encoder lerobot` on a fresh SmolVLA: the SmolVLM's tower, mean-pooled over
    patches, the same for every build; editing one weight changes the cache key."""

    tower = vision_tower(LeRobotConfig(vlm=str(vlm)))
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    feats = tower.encode(images)
    assert feats.shape == (3, tower.feature_dim) and tower.feature_dim == 16  # vision hidden
    pixels = tower.preprocess(torch.from_numpy(images))
    assert pixels.shape[-1] == 32  # resized to the tower's own image size
    with torch.no_grad():
        own = tower.model(pixel_values=pixels).last_hidden_state.mean(1)
    np.testing.assert_allclose(feats, own.numpy(), rtol=1e-6, atol=1e-6)
    again = vision_tower(LeRobotConfig(vlm=str(vlm)))
    assert again.identity == tower.identity
    np.testing.assert_array_equal(again.encode(images), feats)
    with torch.no_grad():
        next(again.model.parameters()).add_(1e-3)
    assert again.identity != tower.identity


def test_pretrained_checkpoints_tower_is_the_actors(vlm, tmp_path):
    """From a saved SmolVLA checkpoint, the critic's tower holds the actor's tower weights."""
    import copy

    actor = make_actor(vlm, seed=3)
    actor.policy.save_pretrained(tmp_path / "ckpt")
    tower = vision_tower(LeRobotConfig(pretrained=str(tmp_path / "ckpt"), vlm=str(vlm)))
    own = LeRobotVisionTower("smolvla", copy.deepcopy(policy_tower(actor.policy, "smolvla")))
    assert tower.identity == own.identity
    fresh = vision_tower(LeRobotConfig(vlm=str(vlm)))  # seed 0's random tower: another one
    assert fresh.identity != tower.identity


def test_image_run_config_checks_the_lerobot_tower(tmp_path):
    from aloe.config import preset

    cfg = preset("smoke")
    cfg.obs, cfg.vision.encoder = "image", "lerobot"
    with pytest.raises(UsageError, match=r"lerobot.vlm \(None\): a fresh SmolVLA needs"):
        cfg.validate()


def _lerobot_transformers() -> bool:
    try:
        from transformers.models.siglip import check

        return bool(check.check_whether_transformers_replace_is_installed_correctly())
    except ImportError:
        return False


@pytest.mark.skipif(
    not _lerobot_transformers(),
    reason="pi0/pi05 need lerobot's patched transformers branch (not on PyPI)",
)
@pytest.mark.parametrize("policy", ["pi0", "pi05"])
def test_pi_policies_share_the_adapter(policy, tmp_path):
    """A tiny random π0/π0.5 saved locally, then run through the same adapter."""
    import dataclasses

    from lerobot.configs.types import FeatureType, PolicyFeature

    from aloe.policies.lerobot_policy import policy_class

    cls = policy_class(policy)
    config = cls.config_class(
        paligemma_variant="gemma_300m",
        action_expert_variant="gemma_300m",
        chunk_size=H,
        n_action_steps=H,
        max_state_dim=40,
        device="cpu",
        input_features={
            "observation.state": PolicyFeature(FeatureType.STATE, (S,)),
            "observation.images.cam": PolicyFeature(FeatureType.VISUAL, (3, 224, 224)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (A,))},
    )
    cls(config).save_pretrained(tmp_path)
    write_tiny_smolvlm(tmp_path / "tok")  # tokenizer files beside the checkpoint
    for f in (tmp_path / "tok").glob("tokenizer*"):
        f.rename(tmp_path / f.name)
    cfg = dataclasses.replace(
        LeRobotConfig(policy=policy, pretrained=str(tmp_path)), num_flow_steps=2
    )
    actor = build_actor(cfg, TASKS, state_dim=S, action_dim=A, horizon=H)
    state, task, actions, valid = batch()
    assert actor.flow_loss_per_sample(state, task, actions, valid).shape == (B,)
    assert actor.sample(state, task, 1).shape == (B, 1, H, A)


def test_the_prompt_carries_the_indicator(vlm):
    """RECAP's indicator is text after the task's prompt: "Advantage: positive" or
    "negative", nothing when dropped (the task's prompt alone); the VLA is unchanged."""
    from aloe.policies.indicator import DROPPED, NEGATIVE, POSITIVE, Guidance

    actor = make_actor(vlm)
    keys = set(actor.state_dict())
    actor.use_indicator(Guidance(POSITIVE, 1.0))
    assert set(actor.state_dict()) - keys == {"prompt_tokens", "prompt_mask"}
    state, task, _, _ = batch()
    tokenizer = actor.policy.model.vlm_with_expert.processor.tokenizer

    def text(inputs):
        ids = inputs["observation.language.tokens"]
        mask = inputs["observation.language.attention_mask"]
        rows = zip(ids, mask, strict=True)
        return [tokenizer.decode(i[m], skip_special_tokens=True) for i, m in rows]

    def prompts(indicator):
        return text(actor.lerobot_inputs(state, task, indicator=torch.full_like(task, indicator)))

    alone = prompts(DROPPED)  # (the tiny tokenizer knows no "and", "it")
    assert alone == ["pick the puck place at the goal", "press the button"] * 2 + alone[-1:]
    assert prompts(POSITIVE) == [f"{t} Advantage: positive" for t in alone]
    assert prompts(NEGATIVE) == [f"{t} Advantage: negative" for t in alone]
    assert alone == text(make_actor(vlm).lerobot_inputs(state, task))  # the plain prompt
    valid = torch.ones(B, H)
    a = torch.zeros(B, H, A)
    losses = [
        actor.flow_loss_per_sample(
            state,
            task,
            a,
            valid,
            torch.Generator().manual_seed(0),
            indicator=torch.full_like(task, i),
        )
        for i in (POSITIVE, NEGATIVE)
    ]
    assert not torch.allclose(*losses)  # the prompt reaches the VLA


def test_cfg_runs_both_prompts_in_one_batch_at_every_step(vlm):
    """β = 1 samples the positive prompt's chunks; β = 0 the unconditional prompt's (both
    halves of the 2B batch move by the unconditional velocity); β = 2 neither."""
    from aloe.policies.indicator import POSITIVE, Guidance

    actor = make_actor(vlm)
    actor.use_indicator(Guidance(POSITIVE, 1.0))
    state, task, _, _ = batch()

    def chunks(guidance):
        actor.guidance = guidance
        return actor.sample(state, task, 1, torch.Generator().manual_seed(4))

    positive, free = chunks(Guidance(POSITIVE, 1.0)), chunks(None)
    assert not torch.allclose(positive, free, atol=1e-4)
    torch.testing.assert_close(chunks(Guidance(POSITIVE, 0.0)), free, atol=1e-5, rtol=0)
    guided = chunks(Guidance(POSITIVE, 2.0))
    assert not torch.allclose(guided, positive, atol=1e-4)
    assert not torch.allclose(guided, free, atol=1e-4)
    assert "denoise_step" not in vars(actor.policy.model)  # the wrapper is gone after sampling


@pytest.mark.slow
def test_aloe_smoke_run_trains_it_end_to_end_and_resumes(vlm, tmp_path, same_metrics):
    """collect, critic, weighted actor update, evaluation, checkpoint; then a run whose last
    checkpoint is gone resumes from the one before it to the same metrics."""
    import json
    import shutil

    from aloe import load_run
    from aloe.config import preset
    from aloe.train import train

    cfg = preset("smoke")
    cfg.out, cfg.progress, cfg.actor_kind = tmp_path / "run", False, "lerobot"
    cfg.lerobot = LeRobotConfig(vlm=str(vlm), num_flow_steps=2)
    history = train(cfg)
    assert [row["iteration"] for row in history] == [0, 1, 2]
    run = load_run(cfg.out)
    assert type(run.actor).__name__ == "LeRobotActor"
    assert run.sample(torch.zeros(S).numpy(), num_samples=2, seed=0).shape == (2, 10, A)
    copy = tmp_path / "resumed"
    shutil.copytree(cfg.out, copy)
    shutil.rmtree(copy / "checkpoints" / "iter-0002")
    cfg.out = copy
    train(cfg, resume=True)

    def rows(root):
        out = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in out]

    same_metrics(rows(copy), rows(tmp_path / "run"))


@pytest.mark.slow
def test_recap_smoke_run_trains_a_smolvla_end_to_end(vlm, tmp_path):
    """`--algo recap` on the tiny SmolVLA: value, labels, indicator-conditioned actor steps,
    evaluation with CFG (β_cfg = 2) on the positive prompt; the run loads acting on it."""
    from aloe import load_run
    from aloe.config import preset
    from aloe.policies.indicator import POSITIVE, Guidance
    from aloe.train import train

    cfg = preset("smoke")
    cfg.out, cfg.progress, cfg.actor_kind, cfg.algo = tmp_path / "run", False, "lerobot", "recap"
    cfg.iterations = 1
    cfg.lerobot = LeRobotConfig(vlm=str(vlm), num_flow_steps=2)
    cfg.recap = dataclasses.replace(cfg.recap, cfg_beta=2.0, value_steps=5, actor_steps=5)
    history = train(cfg)
    assert [row["iteration"] for row in history] == [0, 1]
    assert history[1]["positive_human_frac"] == 1.0 and history[1]["actor_flow_loss"] > 0
    run = load_run(cfg.out)
    assert run.actor.guidance == Guidance(POSITIVE, 2.0) and run.actor.prompt_tokens is not None
    assert run.sample(torch.zeros(S).numpy(), num_samples=2, seed=0).shape == (2, 10, A)


@pytest.mark.slow
def test_image_smoke_run_critic_reads_the_vlas_tower(vlm, tmp_path):
    """`--obs image --vision.encoder lerobot --actor-kind lerobot` from a pretrained
    checkpoint: the critic reads camera features of the VLA's tower (cached by its
    identity), the VLA reads the robot state and the camera's pixels (collection, training
    batches and evaluation), and checkpoints leave the frozen VLM out."""
    from aloe import load_run
    from aloe.config import preset
    from aloe.train import train

    cfg = preset("smoke")
    build_actor(
        LeRobotConfig(vlm=str(vlm)), TASKS, state_dim=S, action_dim=A, horizon=cfg.horizon
    ).policy.save_pretrained(tmp_path / "vla")
    cfg.out, cfg.progress, cfg.actor_kind = tmp_path / "run", False, "lerobot"
    cfg.obs, cfg.vision.encoder, cfg.vision.image_size = "image", "lerobot", 32
    cfg.lerobot = LeRobotConfig(pretrained=str(tmp_path / "vla"), vlm=str(vlm), num_flow_steps=2)
    history = train(cfg)
    assert [row["iteration"] for row in history] == [0, 1, 2]
    run = load_run(cfg.out)
    assert run.obs.layout == (S, 16) and run.actor.robot_state_dim == S
    assert run.actor.cameras == ("corner",)  # the VLA reads the camera's pixels too
    image = np.zeros((1, 32, 32, 3), np.uint8)
    vector = np.zeros(run.obs.dim)  # the observation vector: state and the tower's features
    assert run.sample(vector, num_samples=2, seed=0, images=image).shape == (2, 10, A)
    saved = checkpoint.load(cfg.out / "checkpoints" / "iter-0002")["learner"]["actor"]
    assert "frozen_sha256" in saved and not set(run.actor.frozen_keys()) & set(saved)
    tower = vision_tower(cfg.lerobot)
    cached = list((cfg.out / "dataset" / "cache" / "features").iterdir())
    assert [d.name for d in cached] == [tower.identity[:16]]


def test_torchvision_after_mujoco_on_osmesa_does_not_crash():
    """`import aloe` imports torchvision before MuJoCo loads OSMesa (the other order
    segfaults with PyPI's torchvision), so `aloe train --actor-kind lerobot` runs on a CPU
    machine rendering with OSMesa."""
    import os
    import subprocess
    import sys

    code = "import aloe.envs.metaworld, mujoco, torchvision; print('ok')"
    env = {**os.environ, "MUJOCO_GL": "osmesa"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
