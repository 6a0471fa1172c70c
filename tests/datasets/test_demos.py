"""`--demos`: a LeRobotDataset v3 (or an aloe store) as a run's demonstrations, without lerobot.

The datasets here are written with pyarrow as LeRobot 0.4.4 writes them (its data, episodes-
meta and stats columns, and meta/tasks.parquet with the task strings as the pandas index);
tests/lerobot has the same checks on datasets LeRobot itself writes. Every refusal is one
line, before any work, and leaves the dataset's files as they were (hashes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aloe import data as D
from aloe.cli import main
from aloe.datasets.demos import Demos, DemosMap, DemosTarget
from aloe.datasets.store import EpisodeStore
from aloe.errors import UsageError

S, A = 39, 4  # MetaWorld's state and action sizes
INSTRUCTION = "pick the puck and place it at the goal"


def write_lerobot_like(
    root: Path,
    lengths: tuple[int, ...] = (12, 15, 11),
    *,
    state_dim: int = S,
    action_dim: int = A,
    fps: int = 80,
    tasks: tuple[str, ...] = (INSTRUCTION,),
    version: str = "v3.0",
    action_scale: float = 1.0,
    stats: dict[str, object] | None = None,
) -> Path:
    """A state-only dataset laid out as LeRobot 0.4.4 writes one (`LeRobotDataset.create`,
    `add_frame`, `save_episode`): episode e's state at frame t is e + t / 100 in every
    dimension, its action `action_scale` * t / 100; episode e has task e % len(tasks);
    meta/stats.json holds `stats` (none by default)."""
    n = sum(lengths)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    frame = np.concatenate([np.arange(k) for k in lengths])
    state = np.repeat((episode + frame / 100)[:, None], state_dim, 1).astype(np.float32)
    action = np.repeat((action_scale * frame / 100)[:, None], action_dim, 1).astype(np.float32)

    def vectors(x: np.ndarray) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])

    data = pa.table(
        {
            "observation.state": vectors(state),
            "action": vectors(action),
            "timestamp": pa.array(frame / fps, pa.float32()),
            "frame_index": frame,
            "episode_index": episode,
            "index": np.arange(n),
            "task_index": episode % len(tasks),
        }
    )
    ends = np.cumsum(lengths)
    meta = pa.table(
        {
            "episode_index": np.arange(len(lengths)),
            "tasks": [[tasks[e % len(tasks)]] for e in range(len(lengths))],
            "length": np.asarray(lengths),
            "data/chunk_index": np.zeros(len(lengths), np.int64),
            "data/file_index": np.zeros(len(lengths), np.int64),
            "dataset_from_index": ends - lengths,
            "dataset_to_index": ends,
            "stats/action/mean": [[0.0] * action_dim for _ in lengths],
            "meta/episodes/chunk_index": np.zeros(len(lengths), np.int64),
            "meta/episodes/file_index": np.zeros(len(lengths), np.int64),
        }
    )
    pandas = {
        "index_columns": ["__index_level_0__"],
        "columns": [{"name": "task_index", "field_name": "task_index"}],
    }
    task_table = pa.table({"task_index": np.arange(len(tasks)), "__index_level_0__": tasks})
    features = {
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
        "action": {"dtype": "float32", "shape": [action_dim], "names": None},
        **{
            k: {"dtype": t, "shape": [1], "names": None}
            for k, t in [("timestamp", "float32")]
            + [(k, "int64") for k in ("frame_index", "episode_index", "index", "task_index")]
        },
    }
    info = {
        "codebase_version": version,
        "robot_type": "sawyer",
        "total_episodes": len(lengths),
        "total_frames": n,
        "total_tasks": len(tasks),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": fps,
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": None,
        "features": features,
    }
    for rel, table in [
        ("data/chunk-000/file-000.parquet", data),
        ("meta/episodes/chunk-000/file-000.parquet", meta),
        ("meta/tasks.parquet", task_table.replace_schema_metadata({"pandas": json.dumps(pandas)})),
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / rel)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    (root / "meta" / "stats.json").write_text(json.dumps(stats or {}))
    return root


def target(horizon: int = 10, **changes: object) -> DemosTarget:
    base = DemosTarget("pick-place-v3", {INSTRUCTION: "pick-place-v3"}, S, A, 80.0, horizon, {})
    return base._replace(**changes)


def test_a_lerobot_dataset_becomes_successful_demo_episodes(tmp_path, tree_hashes):
    root = write_lerobot_like(tmp_path / "ds", tasks=("put the puck there",))
    before = tree_hashes(root)
    plan = Demos.open(root, DemosMap()).plan(target())
    assert plan.use == [0, 1, 2] and plan.notice is None and plan.frames == 38
    (eps,) = list(plan.episodes())
    ep = eps[1]
    n = 15
    assert len(ep) == n and ep.task == "pick-place-v3"  # a single-task run's, any instruction
    assert ep.instruction == "put the puck there"
    state = np.repeat((1 + np.arange(n) / 100)[:, None], S, 1).astype(np.float32)
    np.testing.assert_array_equal(ep.steps[D.STATE], state)
    np.testing.assert_array_equal(ep.steps[D.NEXT_STATE][:-1], state[1:])
    np.testing.assert_array_equal(ep.steps[D.NEXT_STATE][-1], state[-1])  # done: never read
    np.testing.assert_array_equal(ep.steps[D.ACTION][:, 0], np.arange(n, dtype=np.float32) / 100)
    assert ep.steps[D.REWARD].tolist() == [-1.0] * (n - 1) + [0.0]  # Eq. 14, a success
    assert ep.steps[D.DONE].tolist() == ep.steps[D.SUCCESS].tolist() == [False] * (n - 1) + [True]
    assert not ep.steps[D.TRUNCATED].any() and not ep.steps[D.INTERVENTION].any()
    assert set(ep.steps[D.SOURCE]) == {"demo"} and set(ep.steps[D.POLICY_VERSION]) == {-1}
    assert ep.meta == {"iteration": 0, "demos": str(root), "demos_episode": 1}
    ep.validate()
    # an interrupted import goes on after the episodes it stored, a batch per append
    rest = list(plan.episodes(start=1, batch_frames=1))
    assert [[e.meta["demos_episode"] for e in batch] for batch in rest] == [[1], [2]]
    assert tree_hashes(root) == before


def test_short_episodes_are_left_out_with_a_notice(tmp_path):
    root = write_lerobot_like(tmp_path / "ds", lengths=(12, 4, 15, 9))
    plan = Demos.open(root, DemosMap()).plan(target())
    assert plan.use == [0, 2]
    assert plan.notice == "2 episodes shorter than --horizon 10 left out (1, 3)"


def test_multi_task_runs_take_their_tasks_instructions_only(tmp_path):
    root = write_lerobot_like(tmp_path / "ds", tasks=("reach the goal", "press the button"))
    demos = Demos.open(root, DemosMap())
    tasks = {"reach the goal": "reach-v3", "press the button": "button-press-v3"}
    (eps,) = list(demos.plan(target(tasks=tasks)).episodes())
    assert [e.task for e in eps] == ["reach-v3", "button-press-v3", "reach-v3"]
    with pytest.raises(UsageError, match=r"episode 1's instruction 'press the button' is none"):
        demos.plan(target(tasks={"reach the goal": "reach-v3", "push it": "push-v3"}))


def test_cameras_must_be_video_features_of_the_runs_size(tmp_path):
    root = write_lerobot_like(tmp_path / "ds")
    demos = Demos.open(root, DemosMap())
    with pytest.raises(UsageError, match=r"--demos-map.cameras \('observation.images.corner'\)"):
        demos.plan(target(cameras={"corner": (32, 32)}))
    mapped = Demos.open(root, DemosMap(cameras=("a", "b")))
    with pytest.raises(UsageError, match="names 2 features; the run reads 1 cameras"):
        mapped.plan(target(cameras={"corner": (32, 32)}))
    with pytest.raises(UsageError, match="the run reads 0 cameras"):
        mapped.plan(target())


def test_an_aloe_store_gives_its_successful_demo_episodes_only(tmp_path, tree_hashes):
    (eps,) = list(
        Demos.open(write_lerobot_like(tmp_path / "ds"), DemosMap()).plan(target()).episodes()
    )
    policy, failed = eps[1], eps[2]
    policy.steps[D.SOURCE] = np.full(len(policy), "policy", dtype=object)
    failed.steps[D.SUCCESS] = np.zeros(len(failed), bool)
    store = EpisodeStore.create(tmp_path / "store", fps=80.0, state_dim=S, action_dim=A)
    store.append(eps)
    before = tree_hashes(store.root)
    plan = Demos.open(store.root, DemosMap()).plan(target())
    assert plan.use == [0] and plan.notice is not None
    assert plan.notice.startswith("2 episodes with policy or human steps, or failed, left out")
    assert tree_hashes(store.root) == before


def test_camera_frames_come_from_the_videos_episode_by_episode(tmp_path, tree_hashes):
    """Several episodes per mp4 (one append), each episode's frames its own: a store's
    lossless videos give back the very pixels."""
    (eps,) = list(
        Demos.open(write_lerobot_like(tmp_path / "ds"), DemosMap()).plan(target()).episodes()
    )
    rng = np.random.default_rng(0)
    for ep in eps:
        ep.steps[D.image_key("corner")] = rng.integers(0, 256, (len(ep), 32, 32, 3), np.uint8)
    store = EpisodeStore.create(
        tmp_path / "store",
        fps=80.0,
        state_dim=S,
        action_dim=A,
        cameras={"corner": (32, 32)},
        video_codec="lossless",
    )
    store.append(eps)
    before = tree_hashes(store.root)
    mapped = DemosMap(cameras=("observation.images.corner",))
    for mapping in (DemosMap(), mapped):
        plan = Demos.open(store.root, mapping).plan(target(cameras={"corner": (32, 32)}))
        assert plan.cameras == {"corner": "observation.images.corner"}
        got = [ep for batch in plan.episodes(batch_frames=20) for ep in batch]
        for mine, theirs in zip(got, eps, strict=True):
            key = D.image_key("corner")
            np.testing.assert_array_equal(mine.steps[key], theirs.steps[key])
    with pytest.raises(
        UsageError, match=r"frames of shape \[32, 32, 3\]; this run's camera corner"
    ):
        Demos.open(store.root, DemosMap()).plan(target(cameras={"corner": (64, 64)}))
    assert tree_hashes(store.root) == before


def test_a_run_trains_from_an_aloe_stores_demos(tmp_path, capsys, tree_hashes):
    """`aloe collect`'s demonstrations as `--demos` of a run through the Python API; then the
    run's directory, as a dataset, holds them as its iteration 0."""
    import aloe
    from aloe.config import TrainConfig, preset

    store = tmp_path / "store"
    argv = f"collect --episodes 2 --max-steps 200 --out {store} --no-progress"
    assert main(argv.split()) == 0
    before = tree_hashes(store)
    cfg = preset("smoke")
    cfg.out, cfg.demos, cfg.progress = tmp_path / "run", store, False
    cfg.iterations, cfg.bc_steps, cfg.eval_episodes, cfg.num_demos = 0, 5, 1, 7
    history = aloe.run_training(cfg)
    assert [row["iteration"] for row in history] == [0] and history[0]["episodes"] == 2
    assert tree_hashes(store) == before
    run = EpisodeStore.open(cfg.out / "dataset")
    source = EpisodeStore.open(store)
    assert run.sim_state_dim is None  # a run from a dataset records no sim.state
    np.testing.assert_array_equal(
        run.load_frames([D.STATE])[D.STATE], source.load_frames([D.STATE])[D.STATE]
    )
    saved = TrainConfig.load(cfg.out)
    assert saved.demos == store and not saved.collect.record_sim_state
    assert main(["dataset", "inspect", str(cfg.out), "--task", "pick-place-v3"]) == 0
    assert "uses 2 of 2 episodes" in capsys.readouterr().out
    assert main(["eval", "--run", str(cfg.out), "--suite", "full"]) == 2  # nothing to restore
    assert "this run recorded none" in capsys.readouterr().err


def _refused(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    dataset: Path,
    out: Path,
    tree_hashes: Callable[[Path], dict[str, str]],
) -> str:
    before = tree_hashes(dataset)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("aloe train: error: "), err
    assert tree_hashes(dataset) == before and not out.exists()
    return err


def _corrupt(rel: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        data = (root / rel).read_bytes()
        (root / rel).write_bytes(data[: len(data) // 2])

    return damage


def _info(key: str, value: object) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        info = json.loads((root / "meta/info.json").read_text())
        info[key] = value
        (root / "meta/info.json").write_text(json.dumps(info))

    return damage


def _data(column: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """Rewrite one column of the data file (a vector column as (frames, width))."""

    def damage(root: Path) -> None:
        path = root / "data/chunk-000/file-000.parquet"
        table = pq.read_table(path)
        old = table[column].combine_chunks()
        if pa.types.is_fixed_size_list(old.type):
            values = change(old.flatten().to_numpy().reshape(len(old), -1).copy())
            new = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        else:
            new = pa.array(change(old.to_numpy().copy()))
        pq.write_table(table.set_column(table.schema.get_field_index(column), column, new), path)

    return damage


def _nan_at_7(x: np.ndarray) -> np.ndarray:
    x[7, 1] = np.nan
    return x


def _episode_0_longer(x: np.ndarray) -> np.ndarray:
    x[12] = 0  # the first frame of episode 1 claims to be episode 0's
    return x


MISFITS = {
    "action size": (dict(action_dim=6), [], "feature 'action' has 6 values per frame; this run's"),
    "state size": (dict(state_dim=7), [], "feature 'observation.state' has 7 values per frame"),
    "frame rate": (dict(fps=30), [], "recorded at 30 fps; this run's pick-place-v3 steps at 80 Hz"),
    "chunk length": (dict(lengths=(5, 8)), [], "every one is shorter than the chunk length"),
    "missing feature": (
        {},
        ["--demos-map.state", "observation.joints"],
        "--demos-map.state ('observation.joints'): no such feature in",
    ),
    "v2.1": (dict(version="v2.1"), [], "codebase_version 'v2.1'; aloe reads LeRobotDataset 'v3.0'"),
}
BROKEN = {
    "no info.json": (lambda root: (root / "meta/info.json").unlink(), "no meta/info.json"),
    "info.json not JSON": (_corrupt("meta/info.json"), "meta/info.json: unreadable JSON"),
    "info.json without fps": (_info("fps", None), "fps None is not a positive number"),
    "data parquet cut": (
        _corrupt("data/chunk-000/file-000.parquet"),
        "data/chunk-000/file-000.parquet: unreadable parquet",
    ),
    "data parquet gone": (
        lambda root: (root / "data/chunk-000/file-000.parquet").unlink(),
        "data/chunk-000/file-000.parquet: missing",
    ),
    "episodes-meta cut": (
        _corrupt("meta/episodes/chunk-000/file-000.parquet"),
        "meta/episodes/chunk-000/file-000.parquet: unreadable parquet",
    ),
    "tasks gone": (lambda root: (root / "meta/tasks.parquet").unlink(), "tasks.parquet: missing"),
    "non-finite action": (
        _data("action", _nan_at_7),
        "feature 'action' holds non-finite values (frame 7)",
    ),
    "vectors wider than info.json says": (
        _data("action", lambda x: np.concatenate([x, x], axis=1)),
        "column 'action' holds 8 values per frame, meta/info.json says 4",
    ),
    "rows disagree with the episodes-meta": (
        _data("episode_index", _episode_0_longer),
        "row 12 has episode_index 0, the episodes-meta rows put episode_index 1 there",
    ),
}


@pytest.mark.parametrize("case", list(MISFITS))
def test_a_mismatched_dataset_is_refused_in_one_line_and_left_unchanged(
    case, tmp_path, capsys, tree_hashes
):
    made, flags, message = MISFITS[case]
    root = write_lerobot_like(tmp_path / "ds", **made)
    out = tmp_path / "run"
    argv = ["train", "--preset", "smoke", "--demos", str(root), "--out", str(out), *flags]
    assert message in _refused(argv, capsys, root, out, tree_hashes)


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_malformed_dataset_is_refused_in_one_line_and_left_unchanged(
    case, tmp_path, capsys, tree_hashes
):
    damage, message = BROKEN[case]
    root = write_lerobot_like(tmp_path / "ds")
    damage(root)
    out = tmp_path / "run"
    argv = ["train", "--preset", "smoke", "--demos", str(root), "--out", str(out)]
    err = _refused(argv, capsys, root, out, tree_hashes)
    assert f"--demos ({root}): " in err and message in err


def test_inspect_prints_the_features_the_mapping_and_the_fit(tmp_path, capsys, tree_hashes):
    root = write_lerobot_like(tmp_path / "ds", lengths=(12, 4, 15))
    before = tree_hashes(root)
    assert main(["dataset", "inspect", str(root), "--task", "pick-place-v3"]) == 0
    out = capsys.readouterr().out
    for line in [
        "fps:          80",
        "episodes:     3, 31 frames (length 4..15, mean 10)",
        f"tasks:        1 (0: {INSTRUCTION!r})",
        "cameras:      none",
        "-> state",
        "mapping:      state observation.state, action action, instruction task",
        "fits:         aloe train --task pick-place-v3 --preset default --horizon 10: uses 2 of "
        "3 episodes (27 frames); 1 episode shorter than --horizon 10 left out (1)",
    ]:
        assert line in out, out
    assert (
        main(["dataset", "inspect", str(root), "--task", "pick-place-v3", "--horizon", "20"]) == 1
    )
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "shorter than the chunk length --horizon 20" in err
    assert main(["dataset", "inspect", str(root), "--demos-map.action", "act"]) == 1
    assert "--demos-map.action ('act'): no such feature" in capsys.readouterr().err
    assert tree_hashes(root) == before
