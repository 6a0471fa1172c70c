import itertools
import subprocess
import sys

import numpy as np
import pytest

from aloe import data as D
from aloe.cli import main
from aloe.collect import CollectConfig, collect, evaluate, run_episode
from aloe.datasets.store import EpisodeStore
from aloe.envs.metaworld import EnvConfig, TaskEnv
from aloe.errors import UsageError
from aloe.operators.scripted import OperatorConfig, ScriptedOperator
from aloe.policies.chunk_policy import RandomPolicy


class ScriptedChunkPolicy:
    """The expert as a 'policy' (noise-free), so a run never needs a takeover."""

    version, exec_horizon = 3, 1

    def __init__(self, task):
        self.op = ScriptedOperator(task, OperatorConfig(noise_std=0.0))

    def reset(self, seed):
        pass

    def act_chunk(self, obs):
        return self.op.act(obs)[None]


def _env(**kw):
    return TaskEnv(EnvConfig(task="bin-picking-v3", c_fail=50.0, **kw))


def test_demo_episode_is_one_demo_fragment():
    env = _env()
    ep = run_episode(env, ScriptedOperator(env.task, OperatorConfig()), 0, policy=None)
    ep.validate()
    assert set(ep.steps[D.SOURCE]) == {"demo"} and set(ep.steps[D.FRAGMENT]) == {0}
    assert ep.success and ep.steps[D.DONE][-1] and not ep.steps[D.DONE][:-1].any()
    assert not ep.steps[D.INTERVENTION].any()
    # the next state of a step is the state of the following step
    assert np.array_equal(ep.steps[D.NEXT_STATE][:-1], ep.steps[D.STATE][1:])


def test_takeover_cuts_a_failed_policy_fragment_and_the_operator_completes():
    env = _env()
    op = ScriptedOperator(env.task, OperatorConfig(patience=30))
    ep = run_episode(env, op, 1, policy=RandomPolicy(seed=1))
    ep.validate()
    src, frag = ep.steps[D.SOURCE], ep.steps[D.FRAGMENT]
    cut = int(np.argmax(src == "human"))
    assert cut > 0 and set(src[:cut]) == {"policy"} and set(src[cut:]) == {"human"}
    assert set(frag[:cut]) == {0} and set(frag[cut:]) == {1}
    # the policy fragment ends in a labelled failure (Eq. 14), the human fragment in success
    assert ep.steps[D.DONE][cut - 1] and ep.steps[D.REWARD][cut - 1] == -50.0
    assert ep.steps[D.FAILURE_REASON][cut - 1].startswith("takeover")
    assert ep.steps[D.INTERVENTION][cut:].all() and not ep.steps[D.INTERVENTION][:cut].any()
    assert ep.success and ep.meta["takeovers"] == 1
    # the operator restarted from the failure state
    assert np.array_equal(ep.steps[D.STATE][cut], ep.steps[D.NEXT_STATE][cut - 1])


def test_handback_gives_several_fragments_joined_by_truncations():
    env = _env()
    op = ScriptedOperator(env.task, OperatorConfig(patience=20))
    ep = run_episode(env, op, 2, policy=RandomPolicy(seed=2), handback_steps=10, max_takeovers=3)
    ep.validate()
    ends = np.flatnonzero(np.diff(ep.steps[D.FRAGMENT]))
    assert ep.steps[D.FRAGMENT].max() >= 2
    for i in ends:  # every fragment but the last ends in a failure label or a handback cut
        assert ep.steps[D.DONE][i] or ep.steps[D.TRUNCATED][i]


def test_collection_rule_stops_at_quota_or_budget():
    env = _env()
    op = ScriptedOperator(env.task, OperatorConfig(noise_std=0.0))
    eps, stats = collect(
        env,
        op,
        CollectConfig(success_quota=2, max_episodes=5),
        policy=None,
        seeds=itertools.count(),
        progress=False,
    )
    assert stats.successes == 2 and len(eps) == stats.episodes == 2
    eps, stats = collect(
        env,
        op,
        CollectConfig(success_quota=99, max_episodes=3),
        policy=RandomPolicy(),
        seeds=itertools.count(),
        progress=False,
    )
    assert stats.episodes == 3 and stats.takeovers >= 3 and stats.human_steps > 0
    assert stats.env_steps == stats.policy_steps + stats.human_steps


def test_evaluate_runs_without_operator():
    env = _env()
    res = evaluate(env, ScriptedChunkPolicy(env.task), seeds=[0, 1])
    assert res.success_rate == 1.0 and res.mean_steps_to_success == np.mean(res.lengths)


def test_collect_validates_its_config_before_recording(tmp_path):
    env = _env()
    store = EpisodeStore.create(
        tmp_path / "s", fps=80, state_dim=env.state_dim, action_dim=env.action_dim
    )
    before = sorted((p, p.stat().st_size) for p in store.root.rglob("*") if p.is_file())
    op = ScriptedOperator(env.task, OperatorConfig())
    with pytest.raises(UsageError, match=r"collect.handback_steps \(-1\): must be >= 0"):
        collect(
            env,
            op,
            CollectConfig(handback_steps=-1),
            policy=None,
            seeds=itertools.count(),
            store=store,
            progress=False,
        )
    assert EpisodeStore.open(store.root).num_episodes == 0
    assert sorted((p, p.stat().st_size) for p in store.root.rglob("*") if p.is_file()) == before


# --- `aloe collect` as a user runs it ------------------------------------------------------


def _tree(root):
    """Every path under root with its bytes (None for a directory)."""
    return {p: None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def _refusal(capsys, argv):
    """Run `aloe collect ARGV` in-process; it must refuse with one line and exit 2."""
    capsys.readouterr()
    assert main(["collect", "--no-progress", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--episodes", "99999999999999999999999", "-o", "{tmp}/store"],
            "--episodes (99999999999999999999999): must be <= 2147483648 (seeds stay below",
        ),
        (
            ["--episodes", "5", "--seed", str(2**31 - 2), "-o", "{tmp}/store"],
            "--episodes (5): must be <= 2 (seeds stay below 2**31",
        ),
        (
            ["-o", "{tmp}/dd/nx/../sp"],
            "--out ({tmp}/dd/nx/../sp): {tmp}/dd/nx does not exist, so the '..' after it",
        ),
    ],
)
def test_collect_refuses_before_creating_anything(tmp_path, capsys, argv, message):
    (tmp_path / "dd").mkdir()
    before = _tree(tmp_path)
    err = _refusal(capsys, ["--task", "reach-v3", *[a.format(tmp=tmp_path) for a in argv]])
    assert err.startswith("aloe collect: error: " + message.format(tmp=tmp_path)), err
    assert _tree(tmp_path) == before  # no store, nothing created


def test_collect_into_another_tasks_store_needs_allow_new_task(tmp_path, capsys):
    out = tmp_path / "store"
    argv = ["--episodes", "1", "--max-steps", "20", "-o", str(out)]
    assert main(["collect", "--no-progress", "--task", "pick-place-v3", *argv]) == 0
    before = _tree(tmp_path)
    err = _refusal(capsys, ["--task", "reach-v3", *argv])
    assert err == (
        f"aloe collect: error: --task ('reach-v3'): {out} holds episodes of ['pick-place-v3'] "
        "only; give --allow-new-task to add another task to it, or another --out"
    )
    assert _tree(tmp_path) == before
    assert main(["collect", "--no-progress", "--task", "reach-v3", "--allow-new-task", *argv]) == 0
    store = EpisodeStore.open(out)
    assert store.episodes()["task_name"].to_pylist() == ["pick-place-v3", "reach-v3"]
    assert store.episodes()["seed"].to_pylist() == [0, 1] and store.check() == []


@pytest.mark.slow
def test_three_concurrent_collect_commands_record_distinct_seeds(tmp_path):
    out = tmp_path / "store"
    argv = ["collect", "--task", "reach-v3", "--episodes", "2", "--max-steps", "30"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "aloe.cli", *argv, "-o", str(out), "--no-progress"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    store = EpisodeStore.open(out)
    seeds = store.episodes()["seed"].to_pylist()
    assert sorted(seeds) == list(range(6)) and store.check() == []


def test_collect_summary_keeps_operator_and_policy_figures_apart():
    from aloe.collect import CollectStats

    stats = CollectStats(
        episodes=18, successes=18, autonomous_successes=18, env_steps=900, human_steps=900
    )
    demos = stats.summary(policy=False)
    assert "policy" not in demos and "autonomous_successes" not in str(demos)
    assert demos["operator"] == {"demonstrations": 18, "steps": 900}
    stats = CollectStats(
        episodes=4,
        successes=3,
        autonomous_successes=1,
        takeovers=3,
        env_steps=400,
        policy_steps=250,
        human_steps=150,
        failure_reasons={"timeout": 2},
    )
    run = stats.summary(policy=True)
    assert run["policy"] == {
        "steps": 250,
        "successes_without_takeover": 1,
        "failure_reasons": {"timeout": 2},
    }
    assert run["operator"] == {"takeovers": 3, "steps": 150}
