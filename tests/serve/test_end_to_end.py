"""The full loop over loopback, for a smoke run: MetaWorld plays the robot through the
client, the scripted operator teleoperates, `aloe serve` computes the chunks and stores the
episodes; then `aloe train --resume` trains the iteration on them, the server swaps to the
new checkpoint, and the robot collects again."""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from aloe import data as D
from aloe import train
from aloe.collect import CollectConfig, collect
from aloe.config import TrainConfig, preset
from aloe.datasets.store import EpisodeStore
from aloe.envs.metaworld import TaskEnv
from aloe.operators.profiles import make_operator
from aloe.robot import sim
from aloe.robot.client import RobotClient
from aloe.robot.connection import Connection
from aloe.run import load_run
from aloe.run_dir import start_run_dir
from aloe.serve.server import Options, PolicyServer, Running

pytestmark = pytest.mark.slow
COLUMNS = [*D.STEP_COLUMNS, D.SIM_STATE]


def smoke(out: Path) -> TrainConfig:
    """The smoke preset, cut to seconds: a short time limit and hand-backs, so that every
    episode has several policy and human fragments."""
    cfg = preset("smoke")
    cfg.out, cfg.progress = out, False
    cfg.iterations, cfg.bc_steps, cfg.eval_episodes = 1, 5, 1
    cfg.env = dataclasses.replace(cfg.env, max_steps=60, c_fail=100.0)
    cfg.operator = dataclasses.replace(cfg.operator, profile="oracle", patience=25)
    cfg.collect = CollectConfig(
        success_quota=2, max_episodes=2, handback_steps=15, operator_max_steps=150, max_takeovers=2
    )
    cfg.actor = dataclasses.replace(cfg.actor, num_flow_steps=2)
    cfg.aloe = dataclasses.replace(cfg.aloe, critic_steps=3, actor_steps=2)
    return cfg


@pytest.fixture(scope="module")
def warm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run after its BC warm start (checkpoint 0), before iteration 1."""
    cfg = train.prepare_run(smoke(tmp_path_factory.mktemp("e2e") / "run"), resume=False)
    trainer = train.Trainer(cfg)
    start_run_dir(cfg)
    trainer.store = trainer._open_store()
    trainer.warm_start()
    return cfg.out


def in_process(run: Path, iteration: int, n: int) -> list[D.Episode]:
    """What `aloe train` collects for `iteration` in-process, without a store."""
    loaded = load_run(run)
    cfg = loaded.config
    seeds = (D.episode_seed(cfg.seed, iteration, i) for i in itertools.count())
    operator = make_operator(cfg.task, cfg.operator, seed=cfg.seed)
    rule = dataclasses.replace(cfg.collect, max_episodes=n)
    episodes, _ = collect(
        TaskEnv(cfg.env),
        operator,
        rule,
        policy=loaded.chunk_policy(seed=cfg.seed),
        seeds=seeds,
        iteration=iteration,
        progress=False,
    )
    return episodes


def stored(run: Path, indices: list[int]) -> tuple[dict[str, np.ndarray], list[dict]]:
    store = EpisodeStore.open(run / "dataset")
    frames = store.load_frames([*COLUMNS, D.EPISODE])
    keep = np.isin(frames[D.EPISODE], indices)
    rows = [r for r in store.episodes().to_pylist() if r["episode_index"] in indices]
    return {k: v[keep] for k, v in frames.items()}, rows


def check_structure(frames: dict[str, np.ndarray], version: int) -> None:
    """Fragments, sources, labels and interventions as the rollout engine writes them."""
    src, frag = frames[D.SOURCE], frames[D.FRAGMENT]
    assert set(src) <= {"policy", "human"} and "human" in set(src)
    assert (frames[D.INTERVENTION] == (src == "human")).all()
    assert (frames[D.POLICY_VERSION] == np.where(src == "policy", version, -1)).all()
    same = np.r_[frames[D.EPISODE][1:] == frames[D.EPISODE][:-1], False]  # t+1 is this episode's
    ends = np.r_[frag[1:] != frag[:-1], True] | ~same  # the last step of each fragment
    then_human, then_policy = (
        same & np.r_[src[1:] == "human", False],
        same & np.r_[src[1:] == "policy", False],
    )
    cut = ends & (src == "policy") & then_human
    assert cut.any() and frames[D.DONE][cut].all() and (frames[D.FAILURE_REASON][cut] != "").all()
    assert (frames[D.REWARD][cut] == -100.0).all()  # Eq. 14: -C_fail at a labelled failure
    handback = ends & (src == "human") & then_policy
    assert handback.any() and frames[D.TRUNCATED][handback].all()
    assert not frames[D.DONE][handback].any()
    inner = ~ends & ~frames[D.DONE]
    assert (frames[D.REWARD][inner] == -1.0).all()


def test_collect_over_the_network_train_swap_and_collect_again(warm_run: Path, tmp_path: Path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(warm_run, run)
    expected = in_process(warm_run, iteration=1, n=2)
    running = Running(PolicyServer(run, Options(poll_s=0.05)))
    try:
        conn = Connection(running.url, running.server.token)
        cfg = TrainConfig.from_json(conn.metadata["config"])
        env = TaskEnv(cfg.env)
        operator = make_operator(cfg.task, cfg.operator, seed=cfg.seed)

        # 1. iteration 1 collected over the network, synchronously: the very same episodes
        client = RobotClient(conn, asynchronous=False)
        first = sim.collect(client, env, operator, cfg, episodes=0)
        assert first["iteration"] == 1 and first["episodes"] == 2 and first["lost"] == 0
        frames, rows = stored(run, first["stored"])
        for column in COLUMNS:
            want = np.concatenate([ep.steps[column] for ep in expected])
            np.testing.assert_array_equal(frames[column], want, err_msg=column)
        for row, ep in zip(rows, expected, strict=True):
            assert row["iteration"] == 1 and row["seed"] == ep.meta["seed"]
            assert row["takeovers"] == ep.meta["takeovers"] and row["length"] == len(ep)
        check_structure(frames, version=0)

        # 2. the iteration trains on them: the trainer collects nothing more in-process
        history = train.train(train.resumed_config(run), resume=True)
        assert history[-1]["iteration"] == 1 and history[-1]["episodes"] == 2
        rows = EpisodeStore.open(run / "dataset").episodes().to_pylist()
        assert sum(r["iteration"] == 1 for r in rows) == 2

        # 3. the server swaps to checkpoint 1 without dropping the connection
        deadline = time.time() + 120
        while conn.call({D.STATE: np.zeros(39, np.float32)})["policy_version"] != 1:
            assert time.time() < deadline, "no swap to iteration 1"
            time.sleep(0.05)

        # 4. and the robot collects again, asynchronously with real-time chunking
        # what a robot connecting now is told: iteration 2
        fresh = Connection(running.url, running.server.token)
        conn.metadata = fresh.metadata
        fresh.close()
        client = RobotClient(conn, asynchronous=True, rtc=True)
        again = sim.collect(client, env, operator, cfg, episodes=2)
        assert again["iteration"] == 2 and again["episodes"] == 2
        frames, rows = stored(run, again["stored"])
        assert {r["iteration"] for r in rows} == {2}
        check_structure(frames, version=1)
        assert client.timing.chunks > 0
    finally:
        running.stop()
