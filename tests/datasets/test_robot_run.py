"""A run for a robot without a simulator (`aloe train --task robot --demos PATH`), without
lerobot: its sizes, rate, instruction and action units come from the dataset, its actions are
stored in [-1, 1], and each call trains one iteration: the warm start, then on `--resume`
the iteration whose episodes the robot sent (here appended as `aloe serve` appends them).
tests/lerobot_venv/test_robot_loop.py runs the same loop with LeRobot's devices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_demos import write_lerobot_like

from aloe import data as D
from aloe.cli import main
from aloe.datasets.store import EpisodeStore

LENGTHS = (12, 15, 11)
DEGREES = 9000.0  # the demos' actions: DEGREES * t / 100, so 0..1260 degrees
SMOKE = ["--preset", "smoke", "--bc-steps", "5", "--no-progress"]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Three episodes of a 6-joint arm at 30 fps, actions in degrees, no meta/stats.json entry."""
    return write_lerobot_like(
        tmp_path / "so101",
        LENGTHS,
        state_dim=6,
        action_dim=6,
        fps=30,
        tasks=("pick the cube", "pick the cube", "stack it"),
        action_scale=DEGREES,
    )


def train(*args: str) -> int:
    return main(["train", *args])


def test_a_robot_run_takes_its_sizes_from_the_dataset_and_stops_at_its_warm_start(
    dataset: Path, tmp_path: Path, capsys, tree_hashes
):
    before = tree_hashes(dataset)
    run = tmp_path / "run"
    assert train("--task", "robot", "--demos", str(dataset), "--out", str(run), *SMOKE) == 0
    assert tree_hashes(dataset) == before
    env = json.loads((run / "config.json").read_text())["env"]
    assert env["robot"] == {
        "state_dim": 6,
        "action_dim": 6,
        "fps": 30.0,
        "instruction": "pick the cube",  # the most frequent of the dataset's task strings
        "action_low": [0.0] * 6,  # its frames': meta/stats.json has no entry of `action`
        "action_high": [DEGREES * 14 / 100] * 6,
    }
    assert env["c_fail"] == pytest.approx(np.mean(LENGTHS))  # Eq. 14: the mean demo length
    store = EpisodeStore.open(run / "dataset")
    assert store.fps == 30.0 and store.sim_state_dim is None
    frames = store.load_frames([D.ACTION, D.SOURCE, D.EPISODE])
    t = np.concatenate([np.arange(n) for n in LENGTHS])
    np.testing.assert_allclose(frames[D.ACTION][:, 0], 2 * t / 14 - 1, atol=1e-6)  # [-1, 1]
    assert set(frames[D.SOURCE]) == {"demo"}
    (row,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert row["iteration"] == 0 and row["eval_episodes"] == 0 and row["success_rate"] is None
    assert row["success_source"] == "robot"
    assert "a robot run: no simulator evaluates its policy" in (run / "report.html").read_text()
    assert list((run / "checkpoints").iterdir()) == [run / "checkpoints" / "iter-0000"]


def test_resume_trains_the_iteration_the_robot_sent_and_stops(dataset: Path, tmp_path: Path):
    run = tmp_path / "run"
    assert train("--task", "robot", "--demos", str(dataset), "--out", str(run), *SMOKE) == 0
    assert train("--resume", str(run)) == 2  # no robot episode of iteration 1 yet
    EpisodeStore.open(run / "dataset").append([robot_episode(takeover=True), robot_episode()])
    assert train("--resume", str(run), "--no-progress") == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1]
    assert rows[1]["episodes"] == 2 and rows[1]["takeovers"] == 1
    assert rows[1]["success_rate"] == 0.5  # one of two finished without a takeover
    assert rows[1]["eval_episodes"] == 0 and rows[1]["critic_loss"] is not None
    assert train("--resume", str(run)) == 2  # iteration 2's episodes: none yet


@pytest.mark.parametrize("algo", ["dagger", "awr", "recap", "bc"])
def test_every_operator_loop_algorithm_trains_a_robot_iteration(
    algo: str, dataset: Path, tmp_path: Path
):
    run = tmp_path / "run"
    argv = ["--task", "robot", "--algo", algo, "--demos", str(dataset), "--out", str(run)]
    assert train(*argv, *SMOKE) == 0
    EpisodeStore.open(run / "dataset").append([robot_episode(takeover=True)])
    assert train("--resume", str(run), "--no-progress") == 0
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == (1 if algo == "bc" else 2)  # BC: the warm start is the whole run


def robot_episode(takeover: bool = False, n: int = 12) -> D.Episode:
    """An episode of iteration 1 as `aloe serve` stores the robot's: the policy (version 0)
    acts; with `takeover`, its fragment is cut as a failure and the person finishes."""
    cut = n // 2 if takeover else n
    source = np.array(["policy"] * cut + ["human"] * (n - cut), dtype=object)
    last = np.arange(n) == n - 1
    done = last | (np.arange(n) == cut - 1)
    reason = np.where(np.arange(n) == cut - 1, "takeover: operator takeover", "")
    steps = {
        D.STATE: np.full((n, 6), 0.5, np.float32),
        D.NEXT_STATE: np.full((n, 6), 0.5, np.float32),
        D.ACTION: np.zeros((n, 6), np.float32),
        D.REWARD: np.where(last, 0.0, np.where(done, -13.0, -1.0)).astype(np.float32),
        D.DONE: done,
        D.TRUNCATED: np.zeros(n, bool),
        D.SUCCESS: last,
        D.INTERVENTION: source == "human",
        D.SOURCE: source,
        D.POLICY_VERSION: np.where(source == "policy", 0, -1).astype(np.int32),
        D.FRAGMENT: (np.arange(n) >= cut).astype(np.int32),
        D.FAILURE_REASON: reason.astype(object) if takeover else np.full(n, "", dtype=object),
    }
    meta = {"iteration": 1, "takeovers": int(takeover), "seed": 10_000 + int(takeover)}
    return D.Episode(task="robot", instruction="pick the cube", steps=steps, meta=meta)


def test_meta_stats_give_the_action_ranges_widened_to_the_frames(tmp_path: Path):
    stats = {"action": {"min": [-90.0] * 5 + [30.0], "max": [90.0] * 5 + [30.0]}}
    root = write_lerobot_like(
        tmp_path / "ds", LENGTHS, state_dim=6, action_dim=6, fps=30, stats=stats
    )  # actions t / 100: within [-90, 90]; the last value's range, [30, 30], widened
    run = tmp_path / "run"
    assert train("--task", "robot", "--demos", str(root), "--out", str(run), *SMOKE) == 0
    robot = json.loads((run / "config.json").read_text())["env"]["robot"]
    assert robot["action_low"] == [-90.0] * 5 + [0.0]
    assert robot["action_high"] == [90.0] * 5 + [30.0]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (
            ["--task", "robot"],
            "config field demos (None): --task robot has no simulator: its sizes come from a "
            "LeRobot dataset of the robot (give --demos PATH)",
        ),
        (
            ["--task", "robot", "--demos", "DS", "--algo", "ppo-sbc"],
            "config field algo ('ppo-sbc'): --task robot has no simulator, where ppo-sbc "
            "collects its own rollouts; one of aloe, awr, dagger, bc, recap",
        ),
        (
            ["--task", "robot", "--demos", "STORE"],
            "--demos (STORE): is an aloe store, whose actions are aloe's, not a robot's: "
            "--task robot takes a LeRobot dataset recorded on the robot",
        ),
    ],
)
def test_a_robot_run_is_refused_in_one_line_before_any_work(
    flags: list[str], says: str, dataset: Path, tmp_path: Path, capsys
):
    store = tmp_path / "store"
    EpisodeStore.open_or_create(store, fps=30, state_dim=6, action_dim=6).append(robot_episode())
    given = {"DS": str(dataset), "STORE": str(store)}
    run = tmp_path / "run"
    assert train(*[given.get(f, f) for f in flags], "--out", str(run), *SMOKE) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"aloe train: error: {says}".replace("STORE", str(store)), err
    assert not run.exists()


def test_eval_and_collect_refuse_a_task_without_a_simulator(dataset: Path, tmp_path, capsys):
    run = tmp_path / "run"
    assert train("--task", "robot", "--demos", str(dataset), "--out", str(run), *SMOKE) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run)]) == 2
    assert "its --task robot has no simulator to evaluate in" in capsys.readouterr().err
    assert main(["collect", "--task", "robot", "-o", str(tmp_path / "c")]) == 2
    assert "has no simulator to collect in" in capsys.readouterr().err
