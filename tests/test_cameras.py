"""Camera observations of TaskEnv: images of the current state, exact after restore, never
perturbing the simulation, validated names, recorded into episodes and the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aloe import data as D
from aloe.collect import run_episode
from aloe.datasets.store import EpisodeStore
from aloe.envs.metaworld import EnvConfig, TaskEnv
from aloe.operators.scripted import OperatorConfig, ScriptedOperator

TASK = "peg-insert-side-v3"
pytestmark = pytest.mark.render


def _env(**kw: Any) -> TaskEnv:
    return TaskEnv(EnvConfig(task=TASK, c_fail=100.0, **kw))


@pytest.fixture(scope="module")
def cam_env() -> Iterator[TaskEnv]:
    env = _env(cameras=("corner",), image_size=32, max_steps=12)
    yield env
    env.close()


def test_images_are_uint8_and_follow_the_arm(cam_env: TaskEnv) -> None:
    obs, _ = cam_env.reset(seed=0)
    first = obs["images"]["corner"]
    assert set(obs["images"]) == {"corner"}
    assert first.dtype == np.uint8 and first.shape == (32, 32, 3)
    assert cam_env.observation_space["images"]["corner"].contains(first)
    for _ in range(5):
        obs, *_ = cam_env.step(np.array([1.0, 0.0, 0.0, 0.0]))
    assert np.abs(obs["images"]["corner"].astype(int) - first).sum() > 0


def test_restore_shows_the_snapshot_exactly(cam_env: TaskEnv) -> None:
    cam_env.reset(seed=1)
    for _ in range(3):
        obs, *_ = cam_env.step(np.array([0.5, -0.5, 0.2, 1.0]))
    snap, before = cam_env.snapshot(), obs["images"]["corner"]
    for _ in range(4):
        cam_env.step(np.array([-1.0, 1.0, -1.0, -1.0]))
    restored = cam_env.restore(snap)
    np.testing.assert_array_equal(restored["images"]["corner"], before)


def test_rendering_leaves_the_simulation_untouched(cam_env: TaskEnv) -> None:
    plain = _env(max_steps=12)
    actions = np.random.default_rng(0).uniform(-1, 1, (8, 4))
    states = []
    for env in (cam_env, plain):
        env.reset(seed=2)
        states.append(np.stack([env.step(a)[0]["state"] for a in actions]))
        states.append(env.sim_state())
    np.testing.assert_array_equal(states[0], states[2])
    np.testing.assert_array_equal(states[1], states[3])
    assert "images" not in plain.reset(seed=2)[0]


def test_close_releases_the_renderer_and_rendering_resumes(cam_env: TaskEnv) -> None:
    image = cam_env.reset(seed=3)[0]["images"]["corner"]
    cam_env.close()
    assert cam_env.cameras._renderer is None
    np.testing.assert_array_equal(cam_env.reset(seed=3)[0]["images"]["corner"], image)


@pytest.mark.parametrize(
    ("cameras", "named"),
    [(("corner", "nope"), "'nope'"), (("corner", "topview", "corner2", "corner3"), "at most 3")],
)
def test_bad_cameras_are_refused(cameras: tuple[str, ...], named: str) -> None:
    with pytest.raises(ValueError, match=named) as error:
        _env(cameras=cameras)
    if "nope" in named:
        assert "gripperPOV" in str(error.value)  # the allowed names are listed


def test_episodes_carry_the_images_before_each_step(cam_env: TaskEnv, tmp_path: Path) -> None:
    operator = ScriptedOperator(TASK, OperatorConfig())
    ep = run_episode(cam_env, operator, 4, policy=None)
    ep.validate()
    images = ep.steps[D.image_key("corner")]
    assert images.dtype == np.uint8 and images.shape == (len(ep), 32, 32, 3)
    np.testing.assert_array_equal(images[0], cam_env.reset(seed=4)[0]["images"]["corner"])

    store = EpisodeStore.create(
        tmp_path / "store",
        fps=80.0,
        state_dim=cam_env.state_dim,
        action_dim=cam_env.action_dim,
        sim_state_dim=cam_env.sim_state_dim,
        cameras={"corner": (32, 32)},
        video_codec="lossless",
    )
    store.append(ep)
    np.testing.assert_array_equal(store.load_images("corner"), images)


def test_images_render_only_when_read_and_show_the_state_of_their_step(
    cam_env: TaskEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    render = cam_env.cameras.render
    monkeypatch.setattr(cam_env.cameras, "render", lambda sim: calls.append(1) or render(sim))
    obs, _ = cam_env.reset(seed=4)
    later, *_ = cam_env.step(np.array([1.0, 0.0, 0.0, 0.0]))
    for _ in range(3):
        cam_env.step(np.array([1.0, 0.0, 0.0, 0.0]))
    assert calls == []  # nothing read, nothing rendered (evaluation reads one step per chunk)
    first = obs["images"]["corner"]  # read after the arm moved on: still the reset's image
    assert len(calls) == 1 and list(obs["images"]) == ["corner"]
    obs_again, _ = cam_env.reset(seed=4)
    assert np.array_equal(first, obs_again["images"]["corner"])
    assert not np.array_equal(first, later["images"]["corner"])
