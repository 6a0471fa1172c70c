"""The episode store: round trips, growth, crash safety under SIGKILL, refusing corruption."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aloe.data import (
    ACTION,
    DONE,
    FAILURE_REASON,
    FRAGMENT,
    INTERVENTION,
    NEXT_STATE,
    POLICY_VERSION,
    REWARD,
    SIM_STATE,
    SOURCE,
    STATE,
    SUCCESS,
    TRUNCATED,
    Episode,
)
from aloe.datasets import cli, writer
from aloe.datasets.store import (
    EpisodeStore,
    StoreError,
    StoreMismatch,
    StoreRefused,
    location_problem,
)
from aloe.errors import UsageError

STORE_KW: dict[str, Any] = {"fps": 10.0, "state_dim": 4, "action_dim": 2}


def make_episode(
    seed: int = 0,
    *,
    n: int | None = None,
    state_dim: int = 4,
    action_dim: int = 2,
    sim_state_dim: int | None = None,
    fragments: tuple[str, ...] = ("policy", "human"),
    instruction: str = "insert the peg",
) -> Episode:
    """A deterministic episode: its contents are a function of `seed` and the arguments."""
    rng = np.random.default_rng(seed)
    n = 4 + seed % 5 if n is None else n
    fragment = np.arange(n) * len(fragments) // n
    source = np.array([fragments[f] for f in fragment], dtype=object)
    cut = np.r_[fragment[1:] != fragment[:-1], False]  # last step of a fragment followed by another
    success = np.zeros(n, bool)
    success[-1] = seed % 2 == 0
    steps = {
        STATE: rng.normal(size=(n, state_dim)).astype(np.float32),
        NEXT_STATE: rng.normal(size=(n, state_dim)).astype(np.float32),
        ACTION: rng.uniform(-1, 1, size=(n, action_dim)).astype(np.float32),
        REWARD: np.where(success, 0.0, -1.0).astype(np.float32),
        DONE: success.copy(),
        TRUNCATED: cut,
        SUCCESS: success,
        INTERVENTION: source == "human",
        SOURCE: source,
        POLICY_VERSION: np.where(source == "policy", 3, -1).astype(np.int32),
        FRAGMENT: fragment.astype(np.int32),
        FAILURE_REASON: np.where(cut & (source == "policy"), "drifted", "").astype(object),
    }
    if sim_state_dim:
        steps[SIM_STATE] = rng.normal(size=(n, sim_state_dim))
    meta = {"seed": seed, "iteration": seed % 3, "sim_attrs": {"pos": [0.1, 0.2]}, "noise": 0.1}
    return Episode("peg-insert-side-v3", instruction, steps, meta)


def concat(episodes: list[Episode]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([ep.steps[k] for ep in episodes]) for k in episodes[0].steps}


def assert_frames_equal(store: EpisodeStore, episodes: list[Episode]) -> None:
    frames = store.load_frames()
    for name, want in concat(episodes).items():
        assert frames[name].dtype == want.dtype, name
        np.testing.assert_array_equal(frames[name], want, err_msg=name)


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """A store with three appends: episodes 0-1, 2, 3-4 in data files 0, 1, 2."""
    store = EpisodeStore.create(tmp_path / "store", **STORE_KW)
    for seeds in ([0, 1], [2], [3, 4]):
        store.append([make_episode(s) for s in seeds])
    return tmp_path / "store"


def test_round_trip_columns_and_meta(tmp_path: Path) -> None:
    eps = [make_episode(0, sim_state_dim=3), make_episode(1, sim_state_dim=3, n=6)]
    eps[1].meta.pop("seed")
    store = EpisodeStore.create(tmp_path / "s", **STORE_KW, sim_state_dim=3)
    assert store.append(eps) == [0, 1]

    store = EpisodeStore.open(tmp_path / "s")
    assert (store.num_episodes, store.num_frames) == (2, len(eps[0]) + 6)
    assert (store.state_dim, store.action_dim, store.sim_state_dim, store.fps) == (4, 2, 3, 10.0)
    assert_frames_equal(store, eps)
    frames = store.load_frames(["index", "episode_index", "frame_index", "timestamp"])
    np.testing.assert_array_equal(frames["index"], np.arange(store.num_frames))
    np.testing.assert_array_equal(frames["episode_index"], np.repeat([0, 1], [len(e) for e in eps]))
    np.testing.assert_allclose(frames["timestamp"], frames["frame_index"] / 10.0)

    rows = store.episodes().to_pylist()
    assert rows[0]["tasks"] == ["insert the peg"] and rows[0]["task_name"] == "peg-insert-side-v3"
    assert (rows[0]["num_fragments"], rows[0]["takeovers"], rows[0]["success"]) == (2, 1, True)
    assert rows[0]["human_steps"] + rows[0]["policy_steps"] == len(eps[0])
    assert rows[0]["failure_reasons"] == ["drifted"]
    assert (rows[0]["seed"], rows[1]["seed"], rows[1]["iteration"]) == (0, None, 1)
    assert json.loads(rows[0]["sim_attrs"]) == {"pos": [0.1, 0.2]}
    assert json.loads(rows[0]["meta_json"]) == {"noise": 0.1}
    assert (rows[1]["dataset_from_index"], rows[1]["dataset_to_index"]) == (len(eps[0]), 10)
    assert store.check() == []


def test_disk_layout_follows_lerobot_v3(filled: Path) -> None:
    info = json.loads((filled / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["aloe_format"] == 1
    assert (info["total_episodes"], info["total_tasks"], info["chunks_size"]) == (5, 1, 1000)
    assert info["splits"] == {"train": "0:5"}
    assert info["features"][STATE] == {
        "dtype": "float32",
        "shape": [4],
        "names": ["state_0", "state_1", "state_2", "state_3"],
    }
    assert pq.read_table(filled / "meta/tasks.parquet").to_pylist() == [
        {"task_index": 0, "task": "insert the peg"}
    ]
    data = pq.read_table(filled / "data/chunk-000/file-002.parquet")
    assert data.schema.field(ACTION).type.list_size == 2
    assert data["index"].to_pylist()[0] == info["total_frames"] - data.num_rows
    stats = json.loads((filled / "meta/stats.json").read_text())
    state = EpisodeStore.open(filled).load_frames([STATE])[STATE].astype(np.float64)
    np.testing.assert_allclose(stats[STATE]["mean"], state.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats[STATE]["std"], state.std(0), rtol=1e-6)
    assert stats[REWARD]["count"] == [info["total_frames"]]


def test_appends_grow_one_dataset(tmp_path: Path) -> None:
    root, eps = tmp_path / "s", list[Episode]()
    for i in range(4):
        store = EpisodeStore.open_or_create(root, **STORE_KW)
        batch = [make_episode(10 * i + j, instruction=f"task {i % 2}") for j in range(i + 1)]
        assert store.append(batch) == list(range(len(eps), len(eps) + len(batch)))
        eps += batch
    store = EpisodeStore.open(root)
    assert store.num_episodes == 10 and store.tasks() == ["task 0", "task 1"]
    assert_frames_equal(store, eps)
    assert store.load_frames(["task_index"])["task_index"].tolist() == [
        int(ep.instruction[-1]) for ep in eps for _ in range(len(ep))
    ]
    meta = store.episodes()
    assert meta["dataset_to_index"].to_pylist()[:-1] == meta["dataset_from_index"].to_pylist()[1:]
    assert len(list(root.glob("data/chunk-000/*.parquet"))) == 4
    summary = store.summary()
    assert (
        summary["frames"] == sum(len(e) for e in eps) == sum(summary["frames_by_source"].values())
    )
    assert summary["takeovers"] == 10 and summary["failure_reasons"] == {"drifted": 10}
    assert sum(summary["episodes_per_iteration"].values()) == 10
    assert store.check() == []


@settings(max_examples=8, deadline=None)
@given(st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=3), min_size=1, max_size=4))
def test_any_append_pattern_reads_back_in_order(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[int]]
) -> None:
    root = tmp_path_factory.mktemp("store")
    eps, seed = [], 0
    for lengths in batches:
        batch = []
        for n in lengths:
            batch.append(
                make_episode(seed, n=n, fragments=("policy",) if n == 1 else ("demo", "human"))
            )
            seed += 1
        EpisodeStore.open_or_create(root, **STORE_KW).append(batch)
        eps += batch
    store = EpisodeStore.open(root)
    assert_frames_equal(store, eps)
    assert store.episodes()["length"].to_pylist() == [len(ep) for ep in eps]
    assert store.check() == []


def test_two_writers_take_turns(tmp_path: Path) -> None:
    first = EpisodeStore.create(tmp_path / "s", **STORE_KW)
    second = EpisodeStore.open(tmp_path / "s")
    assert first.append(make_episode(0)) == [0]
    assert second.append(make_episode(1, instruction="other")) == [1]
    assert first.append(make_episode(2, instruction="other")) == [2]
    store = EpisodeStore.open(tmp_path / "s")
    assert store.tasks() == ["insert the peg", "other"]
    assert_frames_equal(store, [make_episode(0), make_episode(1), make_episode(2)])
    assert store.check() == []


def test_files_roll_into_the_next_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "CHUNKS_SIZE", 2)
    store = EpisodeStore.create(tmp_path / "s", **STORE_KW)
    eps = [make_episode(s) for s in range(5)]
    for ep in eps:
        store.append(ep)
    assert (tmp_path / "s/data/chunk-002/file-000.parquet").is_file()
    assert (tmp_path / "s/meta/episodes/chunk-001/file-001.parquet").is_file()
    store = EpisodeStore.open(tmp_path / "s")
    assert_frames_equal(store, eps)
    assert store.check() == []


def test_empty_store(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "s", **STORE_KW)
    frames = store.load_frames()
    assert frames[STATE].shape == (0, 4) and frames[SOURCE].dtype == object
    assert store.summary()["success_rate"] is None
    assert store.append([]) == [] and store.check() == []


# The child imports once, then forks writers and SIGKILLs each after a random delay;
# a writer prints the indices an append returned only after it returned. Episodes and store
# options come from a test module (argv: its folder, name, store-options and factory names).
CHILD = r"""
import importlib, os, random, select, signal, sys, time, traceback
sys.path.insert(0, sys.argv[2])
module = importlib.import_module(sys.argv[3])
store_kw, make = getattr(module, sys.argv[4]), getattr(module, sys.argv[5])
from aloe.datasets.store import EpisodeStore

root, seed0 = sys.argv[1], int(sys.argv[6])
rng = random.Random(seed0)
for r, spec in enumerate(sys.argv[7:]):
    read_end, write_end = os.pipe()  # one byte per append returned, for a "+delay"
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            store = EpisodeStore.open_or_create(root, **store_kw)
            for k in range(10**6):
                seed = 1_000_000 * seed0 + 10_000 * r + 2 * k
                idx = store.append([make(seed), make(seed + 1)])
                os.write(1, ("ok " + " ".join(map(str, idx)) + "\n").encode())
                os.write(write_end, b".")
        except BaseException:
            traceback.print_exc()
        os._exit(1)
    os.close(write_end)
    if spec.startswith("+"):  # counted from the first append's return, however busy the CPU
        select.select([read_end], [], [], 60)
    time.sleep(float(spec.lstrip("+")) + rng.uniform(0, 0.05))
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(read_end)
    print("killed" if os.WIFSIGNALED(status) else "writer died", flush=True)
"""


def kill_writers(
    root: Path, test_file: str, store_kw: str, factory: str, seed: int, delays: list[str]
) -> list[int]:
    """Run CHILD on `root`; the episode indices that appends returned before the kills.

    A delay kills its writer that many seconds after it started; "+d", d seconds after its
    first append returned (so that a busy machine still commits something)."""
    here = Path(test_file)
    args = [
        sys.executable,
        "-c",
        CHILD,
        str(root),
        str(here.parent),
        here.stem,
        store_kw,
        factory,
        str(seed),
        *delays,
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    assert lines.count("killed") == len(delays), out.stderr
    returned = [int(i) for line in lines if line.startswith("ok ") for i in line.split()[1:]]
    assert returned, "no append finished before the kills; lengthen the delays"
    return returned


def test_sigkill_never_loses_a_committed_episode(tmp_path: Path) -> None:
    root = tmp_path / "store"
    delays = ["0.0", "0.02", "0.05", "0.1", "0.2", "0.4", "+0.2"]
    returned = kill_writers(root, __file__, "STORE_KW", "make_episode", 7, delays)

    store = EpisodeStore.open(root)
    # all a kill may leave is an append that never committed, which the next one removes
    assert all("an append that never committed" in p for p in store.check())
    assert set(returned) <= set(range(store.num_episodes))
    seeds = store.episodes()["seed"].to_pylist()
    assert len(set(seeds)) == len(seeds)
    assert_frames_equal(store, [make_episode(s) for s in seeds])
    store = EpisodeStore.open_or_create(root, **STORE_KW)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["total_episodes"] == store.num_episodes
    store.append(make_episode(99))
    assert store.check() == []


def crash_at(when: Any) -> Any:
    """`writer.write_bytes` that raises KeyboardInterrupt instead of writing a path `when` accepts."""
    write = writer.write_bytes

    def crashing(path: Path, data: bytes) -> None:
        if when(path):
            raise KeyboardInterrupt
        write(path, data)

    return crashing


def test_crash_after_the_commit_point_is_repaired(
    filled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "write_bytes", crash_at(lambda path: path.name == "stats.json"))
    with pytest.raises(KeyboardInterrupt):
        EpisodeStore.open(filled).append([make_episode(7, instruction="new task")])
    monkeypatch.undo()
    assert json.loads((filled / "meta/info.json").read_text())["total_episodes"] == 5
    store = EpisodeStore.open(filled)
    assert store.num_episodes == 6 and store.tasks()[-1] == "new task"
    assert store.check() == []
    EpisodeStore.open_or_create(filled, **STORE_KW)
    info = json.loads((filled / "meta/info.json").read_text())
    assert (info["total_episodes"], info["total_tasks"]) == (6, 2)


def test_uncommitted_files_are_ignored(filled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "write_bytes", crash_at(lambda path: "episodes" in path.parts))
    with pytest.raises(KeyboardInterrupt):
        EpisodeStore.open(filled).append(make_episode(8))
    monkeypatch.undo()
    assert (filled / "data/chunk-000/file-003.parquet").is_file()  # the orphan
    for leftover in ("data/chunk-000/file-004.parquet.tmp", "meta/info.json.tmp"):
        (filled / leftover).write_bytes(b"half a file")

    store = EpisodeStore.open(filled)
    assert store.num_episodes == 5
    orphan = filled / "data/chunk-000/file-003.parquet"
    assert store.check() == [
        f"{orphan}: orphan: no episode references it (an append that never committed left "
        "it; the next append removes it)"
    ]
    store.append(make_episode(9))
    assert (filled / "data/chunk-000/file-005.parquet").is_file()  # no index reused
    assert not list(filled.glob("**/*.tmp")) and not orphan.exists()
    store = EpisodeStore.open(filled)
    assert store.num_episodes == 6 and store.check() == []
    assert_frames_equal(store, [make_episode(s) for s in (0, 1, 2, 3, 4, 9)])


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_info(root: Path, **changes: object) -> None:
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps(info | changes))


def _drop_column(path: Path, name: str) -> None:
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([name]), path)


CORRUPTIONS = {
    "truncated data file": (
        lambda r: _truncate(r / "data/chunk-000/file-001.parquet"),
        "data/chunk-000/file-001.parquet: unreadable parquet",
    ),
    "truncated meta file": (
        lambda r: _truncate(r / "meta/episodes/chunk-000/file-002.parquet"),
        "meta/episodes/chunk-000/file-002.parquet: unreadable parquet",
    ),
    "garbage info.json": (
        lambda r: (r / "meta/info.json").write_text("{not json"),
        "meta/info.json: unreadable JSON",
    ),
    "deleted data file": (
        lambda r: (r / "data/chunk-000/file-000.parquet").unlink(),
        "data/chunk-000/file-000.parquet: missing",
    ),
    "wrong codebase_version": (
        lambda r: _edit_info(r, codebase_version="v2.1"),
        "meta/info.json: codebase_version 'v2.1'",
    ),
    "missing column": (
        lambda r: _drop_column(r / "data/chunk-000/file-002.parquet", ACTION),
        "data/chunk-000/file-002.parquet: missing column 'action'",
    ),
    "deleted meta file": (
        lambda r: (r / "meta/episodes/chunk-000/file-001.parquet").unlink(),
        "meta/episodes/chunk-000/file-001.parquet: missing (episodes from 2 on are in "
        "data/chunk-000/file-001.parquet but in no episodes-meta file)",
    ),
    "deleted first meta file": (
        lambda r: (r / "meta/episodes/chunk-000/file-000.parquet").unlink(),
        "meta/episodes/chunk-000/file-000.parquet: missing (episodes from 0 on",
    ),
    "deleted last meta file": (
        lambda r: (r / "meta/episodes/chunk-000/file-002.parquet").unlink(),
        "meta/episodes/chunk-000/file-002.parquet: missing (episodes from 3 on",
    ),
    "episode gap": (
        lambda r: [
            (r / f"{d}/chunk-000/file-001.parquet").unlink() for d in ("data", "meta/episodes")
        ],
        "meta/episodes/chunk-000/file-002.parquet: episode_index [3, 4] does not continue",
    ),
    "totals off": (
        lambda r: _edit_info(r, total_frames=3),
        "meta/info.json: totals (5, 3)",
    ),
    "garbage tasks": (
        lambda r: (r / "meta/tasks.parquet").write_text("task"),
        "meta/tasks.parquet: unreadable parquet",
    ),
}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corrupt_store_is_refused(
    filled: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, message = CORRUPTIONS[name]
    damage(filled)
    with pytest.raises(StoreError) as error:
        EpisodeStore.open(filled)
    assert str(error.value).startswith(str(filled / message.split(":")[0]))
    assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(StoreError, match="refusing"):
        EpisodeStore.create(filled, **STORE_KW)
    assert cli.check(filled) == 1
    out, err = capsys.readouterr()
    *corrupt, last = err.splitlines()
    assert out == "" and last == f"aloe dataset: error: {error.value}"
    # a file edited in place is also named by its checksum (a deleted one is passed over)
    assert all(
        line.endswith("sha256 differs from meta/checksums.json: corrupt") for line in corrupt
    )
    assert len(corrupt) == ("deleted" not in name and "gap" not in name)


def test_check_reads_the_data_itself(filled: Path) -> None:
    path = filled / "data/chunk-000/file-001.parquet"
    table = pq.read_table(path)
    index = table.schema.get_field_index("frame_index")
    pq.write_table(table.set_column(index, "frame_index", table["frame_index"][::-1]), path)
    EpisodeStore.open(filled)  # footers still agree
    disagrees = f"{path}: column 'frame_index' disagrees with the episodes-meta rows"
    assert EpisodeStore.open(filled).check(fast=True) == [disagrees]
    corrupt = f"{path}: sha256 differs from meta/checksums.json: corrupt"
    assert EpisodeStore.open(filled).check() == [corrupt, disagrees]


def test_foreign_directory_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("notes.txt", "meta/info.jsonl", "data/blob.bin"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(rng.bytes(64))
    with pytest.raises(StoreError, match=f"^{tmp_path}/meta/info.json: missing"):
        EpisodeStore.open(tmp_path)
    with pytest.raises(StoreError, match=f"^{tmp_path}: is not empty and not an aloe store"):
        EpisodeStore.create(tmp_path, **STORE_KW)
    with pytest.raises(StoreError, match="not an aloe store"):
        EpisodeStore.open_or_create(tmp_path, **STORE_KW)
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["notes.txt", "meta", "info.jsonl", "data", "blob.bin"]
    )


def test_create_in_an_existing_empty_directory(tmp_path: Path) -> None:
    EpisodeStore.create(tmp_path, **STORE_KW)
    assert EpisodeStore.open(tmp_path).num_episodes == 0


def test_append_refuses_mismatched_episodes(filled: Path) -> None:
    store = EpisodeStore.open(filled)
    before = sorted(filled.rglob("*"))
    with pytest.raises(ValueError, match=r"'observation.state' has shape \(5, 3\), .* \(5, 4\)"):
        store.append([make_episode(0), make_episode(1, n=5, state_dim=3)])
    with pytest.raises(ValueError, match="'sim.state'.* not features"):
        store.append(make_episode(0, sim_state_dim=2))
    bad = make_episode(0)
    bad.steps[SOURCE][0] = "robot"
    with pytest.raises(ValueError, match="'source' has"):
        store.append(bad)
    assert sorted(filled.rglob("*")) == before
    with pytest.raises(
        StoreMismatch, match="records state_dim 4; this collection records state_dim 3"
    ):
        EpisodeStore.open_or_create(filled, **(STORE_KW | {"state_dim": 3}))


def test_cli_info_and_check(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.info(filled) == 0
    out = capsys.readouterr().out
    assert "episodes" in out and "takeovers" in out and "drifted" in out
    assert cli.check(filled) == 0
    frames = EpisodeStore.open(filled).num_frames
    assert capsys.readouterr().out.strip() == f"ok: 5 episodes, {frames} frames"


def test_episode_helper_is_deterministic() -> None:
    a, b = make_episode(3), make_episode(3)
    assert all(np.array_equal(a.steps[k], b.steps[k]) for k in a.steps)
    a.validate()


# The child forks `n` creators that wait on one pipe, so all start together, and each creates
# (or opens or creates, and appends to) the same new store; each prints what it got.
CREATORS = r"""
import os, sys, traceback
os.fsync = lambda fd: None  # durability is not under test here, and fsyncs are slow
sys.path.insert(0, sys.argv[4])
from test_store import STORE_KW, make_episode
from aloe.datasets.store import EpisodeStore, StoreExists

base, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
say = lambda *words: os.write(1, (" ".join(map(str, words)) + "\n").encode())  # one write
EpisodeStore.create(f"{base}/warm-up", **STORE_KW).append(make_episode(0))  # lazy imports
for mode in ("create", "open_or_create"):
    for r in range(rounds):
        root = f"{base}/{mode}-{r}/store"
        start, go = os.pipe()
        pids = []
        for k in range(n):
            pid = os.fork()
            if pid == 0:
                os.close(go)
                os.read(start, 1)
                try:
                    if mode == "create":
                        EpisodeStore.create(root, **STORE_KW)
                        say(mode, r, "created")
                    else:
                        store = EpisodeStore.open_or_create(root, **STORE_KW)
                        say(mode, r, "appended", *store.append(make_episode(k)))
                except StoreExists as e:
                    say(mode, r, "exists", e.reason)
                except BaseException:
                    traceback.print_exc()
                os._exit(0)
            pids.append(pid)
        os.write(go, b"x" * n)
        for pid in pids:
            os.waitpid(pid, 0)
"""


def test_concurrent_creators_leave_one_store_and_no_debris(tmp_path: Path) -> None:
    n, rounds = 3, 3
    args = [
        sys.executable,
        "-c",
        CREATORS,
        str(tmp_path),
        str(n),
        str(rounds),
        str(Path(__file__).parent),
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    lines = out.stdout.splitlines()
    assert out.stderr == "" and len(lines) == 2 * n * rounds, out.stdout
    for mode in ("create", "open_or_create"):
        for r in range(rounds):
            parent = tmp_path / f"{mode}-{r}"
            assert [p.name for p in parent.iterdir()] == ["store"]  # no .store.creating-*
            store = EpisodeStore.open(parent / "store")
            assert store.check() == []
            got = [line.split(maxsplit=2)[2] for line in lines if line.startswith(f"{mode} {r} ")]
            if mode == "create":  # one winner; the losers are told a store is there now
                assert got.count("created") == 1
                assert {g.split(maxsplit=1)[0] for g in got} == {"created", "exists"}
            else:  # the losers grew the winner's store
                assert sorted(store.episodes()["seed"].to_pylist()) == list(range(n))
                assert sorted(got) == [f"appended {k}" for k in range(n)]


def test_create_removes_its_build_directory_on_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_bytes", broken)
    with pytest.raises(OSError, match="No space"):
        EpisodeStore.create(tmp_path / "s", **STORE_KW)
    assert list(tmp_path.iterdir()) == []


def test_check_reports_orphan_files(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = filled / "data/chunk-000/file-007.parquet"
    foreign.write_bytes((filled / "data/chunk-000/file-001.parquet").read_bytes())
    store = EpisodeStore.open(filled)
    video = filled / "videos/observation.images.gone/chunk-000/file-000.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"not an mp4")
    assert store.check() == [
        f"{foreign}: orphan: no episode references it (an append that never committed "
        "left it; the next append removes it)",
        f"{video}: orphan: no episode references it (delete it, or restore the "
        "episodes-meta file that pointed at it)",
    ]
    assert cli.check(filled) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [f"aloe dataset: error: {p}" for p in store.check()]
    store.append(make_episode(5))  # removes the file past the last commit, keeps the other
    assert not foreign.exists() and video.exists()


def _tree_hash(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


MISMATCHES = {
    "state-only into an image store": (
        {"cameras": {"corner": (64, 64)}},
        {},
        "the store records cameras ['corner'] at 64 px; this collection records none",
    ),
    "images into a state-only store": (
        {},
        {"cameras": {"corner": (64, 64)}},
        "the store records none; this collection records cameras ['corner'] at 64 px",
    ),
    "another camera set": (
        {"cameras": {"corner": (8, 8)}},
        {"cameras": {"corner": (8, 8), "top": (8, 8)}},
        "the store records cameras ['corner'] at 8 px; this collection records cameras "
        "['corner', 'top'] at 8 px",
    ),
    "another image size": (
        {"cameras": {"corner": (8, 8)}},
        {"cameras": {"corner": (16, 8)}},
        "the store records cameras ['corner'] at 8 px; this collection records cameras "
        "['corner'] at 16x8 px",
    ),
    "state_dim": ({}, {"state_dim": 5}, "records state_dim 4; this collection records state_dim 5"),
    "action_dim": (
        {},
        {"action_dim": 3},
        "records action_dim 2; this collection records action_dim 3",
    ),
    "fps": ({}, {"fps": 20.0}, "the store records 10 fps; this collection records 20 fps"),
    "sim.state": (
        {"sim_state_dim": 3},
        {},
        "the store records sim.state of 3 values; this collection records none",
    ),
    "codec": (
        {"cameras": {"corner": (8, 8)}},
        {"cameras": {"corner": (8, 8)}, "video_codec": "lossless"},
        "the store records h264 videos; this collection records lossless videos",
    ),
}


@pytest.mark.parametrize("name", MISMATCHES)
def test_a_store_refuses_a_collection_that_does_not_fit(tmp_path: Path, name: str) -> None:
    store_kw, collection_kw, message = MISMATCHES[name]
    root = tmp_path / "s"
    store = EpisodeStore.create(root, **(STORE_KW | store_kw))
    if not store.cameras:
        store.append(make_episode(0, sim_state_dim=store_kw.get("sim_state_dim")))
    before = _tree_hash(root)
    with pytest.raises(StoreMismatch) as error:
        EpisodeStore.open_or_create(root, **(STORE_KW | collection_kw))
    assert message in error.value.reason and str(error.value).startswith(f"{root}: ")
    assert isinstance(error.value, UsageError)
    assert _tree_hash(root) == before


def test_locations_that_cannot_hold_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("mine")
    (tmp_path / "full").mkdir()
    (tmp_path / "full/notes.txt").write_text("mine")
    cases = {
        tmp_path / "file": "is a file; give a directory",
        tmp_path / "file/store": f"{tmp_path / 'file'} is a file; give a path under a directory",
        tmp_path / "full": "is not empty and not an aloe store; give a new or empty directory",
        Path(
            "/proc/store"
        ): "is under /proc, which holds no ordinary files; give another directory",
        Path("/sys/store"): "is under /sys, which holds no ordinary files; give another directory",
    }
    before = _tree_hash(tmp_path)
    for root, reason in cases.items():
        assert location_problem(root) == reason, root
        with pytest.raises(StoreRefused) as error:
            EpisodeStore.open_or_create(root, **STORE_KW)
        assert error.value.reason == reason
    assert location_problem(tmp_path / "new/deeper") is None
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a read-only mount
    assert location_problem(tmp_path / "new") == (
        f"cannot write in {tmp_path}; give a writable directory"
    )
    monkeypatch.undo()
    assert _tree_hash(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "file",
        "full",
    ]
