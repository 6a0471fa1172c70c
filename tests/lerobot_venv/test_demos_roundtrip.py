"""The data path is LeRobot's both ways (issue 36, item 3): MetaWorld expert episodes written
by LeRobot's own `LeRobotDataset.create` / `add_frame` / `save_episode` become a smoke run's
`--demos` (compact actor and a tiny SmolVLA), and the run's store reads back with LeRobot's
`LeRobotDataset`. Nothing is downloaded: every dataset lies under the test's tmp directory.

Skipped where lerobot is not importable (the README's plain install); `.ci/run` runs it in
the LeRobot virtualenv. (The directory is not tests/lerobot: pytest puts tests/ on sys.path,
where that name would pass for the lerobot package.) lerobot is imported before aloe (see tests/policies/
test_lerobot_actor.py: PyPI's torchvision segfaults when imported after MuJoCo's OSMesa).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lerobot")

import lerobot.policies.smolvla.modeling_smolvla  # noqa: E402, F401  (before aloe, see above)
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402
from recording import brightness, record  # noqa: E402

from aloe import data as D  # noqa: E402
from aloe.cli import main  # noqa: E402
from aloe.collect import CollectConfig, collect  # noqa: E402
from aloe.config import preset  # noqa: E402
from aloe.datasets.demos import Demos, DemosMap, DemosTarget  # noqa: E402
from aloe.datasets.store import EpisodeStore  # noqa: E402
from aloe.envs.base import EnvConfig  # noqa: E402
from aloe.envs.registry import make_env  # noqa: E402
from aloe.operators.profiles import make_operator  # noqa: E402
from aloe.operators.scripted import OperatorConfig  # noqa: E402
from aloe.policies.lerobot_config import LeRobotConfig  # noqa: E402
from aloe.policies.lerobot_tiny import write_tiny_smolvlm  # noqa: E402
from aloe.train import train  # noqa: E402

TASK = "pick-place-v3"
EPISODES = 3


@pytest.fixture(scope="module")
def expert() -> list[D.Episode]:
    """Three of the scripted expert's successful MetaWorld episodes (aloe's collection)."""
    env = make_env(EnvConfig(task=TASK, max_steps=200))
    operator = make_operator(TASK, OperatorConfig(), seed=0)
    rule = CollectConfig(success_quota=EPISODES, max_episodes=EPISODES, record_sim_state=False)
    episodes, stats = collect(env, operator, rule, policy=None, seeds=iter(range(EPISODES)))
    assert stats.successes == EPISODES
    return episodes


@pytest.fixture(scope="module")
def recorded(expert, tmp_path_factory) -> Path:
    return record(tmp_path_factory.mktemp("lerobot") / "expert", expert)


@pytest.fixture(scope="module")
def vlm(tmp_path_factory) -> Path:
    return write_tiny_smolvlm(tmp_path_factory.mktemp("vlm"))


def smoke_run(out: Path, demos: Path, **fields) -> list[dict]:
    cfg = preset("smoke")
    cfg.out, cfg.demos, cfg.progress = out, demos, False
    cfg.iterations, cfg.eval_episodes = 1, 1
    for name, value in fields.items():
        setattr(cfg, name, value)
    return train(cfg)


def read_back(run: Path, expert: list[D.Episode]) -> None:
    """LeRobot reads the run's store: every episode, the demonstrations first, as recorded."""
    store = EpisodeStore.open(run / "dataset")
    dataset = LeRobotDataset("local/aloe-run", root=run / "dataset")
    assert dataset.num_episodes == store.num_episodes > EPISODES
    assert dataset.num_frames == store.num_frames
    frames = dataset.hf_dataset
    n = sum(len(ep) for ep in expert)
    assert set(frames["source"][:n]) == {"demo"}
    assert {"policy", "human"} & set(frames["source"][n:])  # iteration 1 collected after them
    state = np.stack([np.asarray(s) for s in frames["observation.state"][:n]])
    np.testing.assert_array_equal(state, np.concatenate([ep.steps[D.STATE] for ep in expert]))
    first = dataset[len(expert[0]) - 1]  # the last frame of the first demonstration
    assert bool(first["next.success"]) and first["task"] == expert[0].instruction


def test_a_lerobot_recording_trains_the_compact_actor_and_reads_back(
    expert, recorded, tmp_path, tree_hashes
):
    before = tree_hashes(recorded)
    history = smoke_run(tmp_path / "run", recorded)
    assert [row["iteration"] for row in history] == [0, 1] and history[0]["episodes"] == EPISODES
    assert tree_hashes(recorded) == before
    read_back(tmp_path / "run", expert)


def test_a_lerobot_recording_trains_a_tiny_smolvla_and_reads_back(
    expert, recorded, vlm, tmp_path, tree_hashes
):
    lerobot = LeRobotConfig(vlm=str(vlm), num_flow_steps=2)
    before = tree_hashes(recorded)
    smoke_run(tmp_path / "run", recorded, actor_kind="lerobot", lerobot=lerobot)
    assert tree_hashes(recorded) == before
    read_back(tmp_path / "run", expert)


def test_a_lerobot_video_camera_gives_each_frame_its_recorded_image(expert, tmp_path):
    """The frames `--demos` takes from LeRobot's mp4 (AV1, the episodes back to back in one
    file, placed by their from_timestamp) are the images recorded at those frames: flat
    images of a brightness unique to each frame, which AV1 keeps within a few levels. (LeRobot
    0.4.4 cannot decode here: torchvision 0.29 has no VideoReader and torchcodec is absent.)"""
    short = [
        D.Episode(ep.task, ep.instruction, {k: v[:12] for k, v in ep.steps.items()})
        for ep in expert
    ]
    root = record(tmp_path / "cams", short, images=True)
    target = DemosTarget(TASK, {short[0].instruction: TASK}, 39, 4, 80.0, 10, {"corner": (32, 32)})
    (episodes,) = list(Demos.open(root, DemosMap()).plan(target).episodes())
    shown = np.stack([ep.steps[D.image_key("corner")] for ep in episodes]).reshape(36, -1)
    recorded = brightness(np.arange(36))
    nearest = np.abs(shown.mean(1)[:, None] - recorded[None, :]).argmin(1)
    assert nearest.tolist() == list(range(36))
    assert np.abs(shown - recorded[:, None]).max() <= 4


def test_a_lerobot_recording_of_another_rate_is_refused_and_left_as_it_was(
    expert, tmp_path, capsys, tree_hashes
):
    root = record(tmp_path / "at30", expert[:1], fps=30)
    capsys.readouterr()  # LeRobot's own progress lines
    before = tree_hashes(root)
    out = tmp_path / "run"
    argv = ["train", "--preset", "smoke", "--demos", str(root), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert f"--demos ({root}): recorded at 30 fps; this run's {TASK} steps at 80 Hz" in err
    assert tree_hashes(root) == before and not out.exists()
    assert main(["dataset", "inspect", str(root), "--task", TASK]) == 1
    shown = capsys.readouterr()
    assert "fps:          30" in shown.out and "recorded at 30 fps" in shown.err
    assert tree_hashes(root) == before
