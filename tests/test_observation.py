"""Observation vectors, camera and instruction tokens, task lists: `aloe.observation`,
`aloe.nn.ObservationTokens` / `InstructionToken`, `aloe.envs.tasks.task_list`."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aloe import data as D
from aloe.config import TrainConfig, preset
from aloe.critics.chunked_q import ChunkedQCritic, CriticConfig
from aloe.envs.tasks import INSTRUCTIONS, SUITES, task_list
from aloe.nn import InstructionToken, ObservationTokens
from aloe.observation import Observations
from aloe.policies.flow import ActorConfig, FlowPolicy


def test_observation_tokens_split_the_vector_by_layout() -> None:
    torch.manual_seed(0)
    enc = ObservationTokens((3, 2, 2), dim=8)
    x = torch.randn(5, 7)
    tokens = enc(x)
    assert tokens.shape == (5, 3, 8)
    assert torch.allclose(tokens[:, 0], enc.state(x[:, :3]))
    assert torch.allclose(tokens[:, 2], enc.cameras[1](x[:, 5:7]))
    with pytest.raises(ValueError, match="segment"):
        ObservationTokens((3, 0), dim=8)


def test_instruction_token_is_a_projection_of_frozen_features() -> None:
    feats = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    tok = InstructionToken(2, 4, feats)
    assert not any(p is tok.features for p in tok.parameters())  # a buffer, never trained
    out = tok(torch.tensor([1, 0]))
    assert torch.allclose(out[0], tok.embedding(torch.tensor([0.0, 2.0])))
    assert InstructionToken(3, 4)(torch.tensor([2])).shape == (1, 4)  # learned embedding
    with pytest.raises(ValueError, match="3 tasks"):
        InstructionToken(3, 4, feats)


def test_actor_and_critic_take_camera_tokens_and_ignore_padding_after_them() -> None:
    torch.manual_seed(0)
    layout, h, a = (39, 6, 6), 4, 4
    actor = FlowPolicy(
        ActorConfig(hidden_dim=16, num_layers=1, num_heads=2),
        51,
        a,
        2,
        obs_layout=layout,
        horizon=h,
    )
    critic = ChunkedQCritic(
        CriticConfig(hidden_dim=16, num_layers=1, num_heads=2, num_q=2),
        51,
        a,
        2,
        obs_layout=layout,
        horizon=h,
    )
    s, task = torch.randn(3, 51), torch.tensor([0, 1, 1])
    assert actor.condition(s, task).shape == (3, 4, 16)  # state, 2 cameras, instruction
    assert actor.sample(s, task, 2).shape == (3, 2, h, a)
    chunks, valid = torch.randn(3, h, a), torch.tensor([[1.0, 1, 0, 0]] * 3)
    q = critic(s, task, chunks, valid)
    other = chunks.clone()
    other[:, 2:] = 5.0  # padded steps: not seen by any value
    assert q.shape == (2, 3) and torch.allclose(q, critic(s, task, other, valid))
    assert not torch.allclose(critic(s, task, chunks), critic(s, task, other))
    s2 = s.clone()
    s2[:, 45:] += 1.0  # the second camera's features are read
    assert not torch.allclose(q, critic(s2, task, chunks, valid))
    with pytest.raises(ValueError, match="add up"):
        FlowPolicy(ActorConfig(), 40, a, 1, obs_layout=layout, horizon=h)


def test_task_lists_and_suites() -> None:
    assert task_list("mt10") == list(SUITES["mt10"]) and len(SUITES["mt10"]) == 10
    assert task_list("reach-v3, push-v3") == ["reach-v3", "push-v3"]
    assert task_list("pick-place-v3") == ["pick-place-v3"]
    for bad in ("reach-v3,reach-v3", "reach-v3,nope-v3", ","):
        with pytest.raises(ValueError):
            task_list(bad)
    cfg = TrainConfig(task="mt10")
    cfg.validate()
    assert Observations(cfg).instructions == [INSTRUCTIONS[t] for t in SUITES["mt10"]]


def test_bad_observation_settings_are_refused_before_any_work() -> None:
    for change, field in [({"obs": "depth"}, "obs"), ({"instructions": "bert"}, "instructions")]:
        with pytest.raises(ValueError, match=f"config field {field} "):
            dataclasses.replace(TrainConfig(), **change).validate()
    cfg = TrainConfig(obs="image")
    for vision, field in [
        ({"cameras": ()}, "vision.cameras"),
        ({"encoder": "resnet"}, "vision.encoder"),
        ({"encoder": "siglip"}, "vision.encoder_path"),
        ({"image_size": 4}, "vision.image_size"),
    ]:
        cfg.vision = dataclasses.replace(TrainConfig().vision, **vision)
        with pytest.raises(ValueError, match=field):
            cfg.validate()
    smoke = preset("smoke")
    assert smoke.vision.image_size <= 32 and smoke.vision.encoder == "siglip-tiny"
    resolved = dataclasses.replace(smoke, obs="image").resolved()
    assert resolved.env.cameras == smoke.vision.cameras
    assert dataclasses.replace(smoke, obs="state").resolved().env.cameras == ()


class _FakeEncoder:
    """Frame g's feature is (g, 10g): easy to check which frame a row came from."""

    feature_dim = 2
    name = "fake"
    identity = "f" * 64

    def config(self) -> dict:
        return {}

    def encode(self, images: np.ndarray) -> np.ndarray:
        g = images[:, 0, 0, 0].astype(np.float32)
        return np.stack([g, 10 * g], axis=1)


class _FakeStore:
    """Two episodes (3 + 2 frames) in two video files; images carry their global index."""

    def tasks(self):
        return [INSTRUCTIONS["push-v3"], INSTRUCTIONS["reach-v3"]]

    def __init__(self, root):
        self.root = root
        self.decoded = 0

    def load_frames(self, columns):
        return {
            D.STATE: np.zeros((5, 39), np.float32),
            D.NEXT_STATE: np.ones((5, 39), np.float32),
            "index": np.arange(5),
            "episode_index": np.array([0, 0, 0, 1, 1]),
            "task_index": np.array([0, 0, 0, 1, 1]),
        }

    def video_files(self, key):
        return [
            SimpleNamespace(file_id="chunk-000/file-000", index=np.arange(3)),
            SimpleNamespace(file_id="chunk-000/file-001", index=np.arange(3, 5)),
        ]

    def load_images(self, key):
        return np.concatenate([self.read_video(key, f.file_id) for f in self.video_files(key)])

    def read_video(self, key, file_id):
        self.decoded += 1
        first = 0 if file_id.endswith("000") else 3
        n = 3 if first == 0 else 2
        return np.arange(first, first + n, dtype=np.uint8)[:, None, None, None] * np.ones(
            (1, 4, 4, 3), np.uint8
        )


def test_frames_carry_image_features_of_this_and_the_next_frame(tmp_path) -> None:
    cfg = TrainConfig(task="reach-v3,push-v3", obs="image")
    obs = Observations(cfg)
    obs.encoder = _FakeEncoder()
    store = _FakeStore(tmp_path)
    frames = obs.frames(store, [])
    assert obs.layout == (39, 2) and frames[D.STATE].shape == (5, 41)
    # store task 0 is push (the run's row 1), store task 1 is reach (row 0)
    assert frames["task_index"].tolist() == [1, 1, 1, 0, 0]
    assert frames[D.STATE][:, 39].tolist() == [0, 1, 2, 3, 4]
    # s_{t+1}'s image is the next frame's; an episode's last step keeps its own frame
    assert frames[D.NEXT_STATE][:, 39].tolist() == [1, 2, 2, 4, 4]
    assert frames[D.NEXT_STATE][:, 40].tolist() == [10, 20, 20, 40, 40]
    assert store.decoded == 2
    again = obs.frames(store, [])  # the cache answers: no frame is decoded again
    assert store.decoded == 2 and np.array_equal(again[D.STATE], frames[D.STATE])
    assert obs.cache_stats == {"hits": 2, "misses": 0}
    assert obs.feature_log["frames_encoded"] == 5 and obs.feature_log["frames_cached"] == 5


def test_a_vla_actor_gets_the_pixels_of_this_and_the_next_frame(tmp_path) -> None:
    """actor_kind lerobot in an image run: the frames carry each row's images and the row of
    s_{t+1}'s; a live observation's come from `pixels`. A compact actor's run has neither."""
    cfg = TrainConfig(task="reach-v3,push-v3", obs="image", actor_kind="lerobot")
    obs = Observations(cfg)
    obs.encoder = _FakeEncoder()
    frames = obs.frames(_FakeStore(tmp_path), [])
    assert obs.pixel_cameras == ("corner",) and frames[D.PIXELS].shape == (5, 1, 4, 4, 3)
    assert frames[D.PIXELS][:, 0, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert frames[D.NEXT_PIXELS_ROW].tolist() == [1, 2, 2, 4, 4]  # as the features' s_{t+1}
    image = np.full((4, 4, 3), 7, np.uint8)
    assert obs.pixels({"state": np.zeros(39), "images": {"corner": image}}).shape == (1, 4, 4, 3)
    with pytest.raises(ValueError, match="no images"):
        obs.pixels({"state": np.zeros(39)})
    flow = Observations(TrainConfig(task="reach-v3", obs="image"))
    flow.encoder = _FakeEncoder()
    assert D.PIXELS not in flow.frames(_FakeStore(tmp_path), []) and flow.pixels({}) is None


def test_checkpoints_with_pre_camera_key_names_still_load() -> None:
    torch.manual_seed(0)
    cfg = ActorConfig(hidden_dim=16, num_layers=1, num_heads=2)
    old = FlowPolicy(cfg, 39, 4, 1, horizon=4)
    legacy = {
        k.replace("obs_encoder.state.", "state_encoder.").replace(
            "instruction.embedding.", "task_embedding."
        ): v
        for k, v in old.state_dict().items()
    }
    assert "state_encoder.0.weight" in legacy and "task_embedding.weight" in legacy
    new = FlowPolicy(cfg, 39, 4, 1, horizon=4)
    new.load_state_dict(legacy)
    s, task = torch.randn(2, 39), torch.zeros(2, dtype=torch.long)
    assert torch.equal(new.condition(s, task), old.condition(s, task))
