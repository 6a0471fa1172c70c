"""`aloe compare` and `aloe report`: one smoke comparison end to end, resumption, and the
summary's arithmetic on hand-written runs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from aloe.cli import main
from aloe.compare import (
    CompareArgs,
    _ready,
    matched_rollout_steps,
    parse_algos,
    train_command,
    train_config,
    validate,
)
from aloe.compare_dir import RunSpec, run_state
from aloe.compare_summary import summarize, write_report
from aloe.envs.tasks import DEFAULT_TASK
from aloe.errors import UsageError

ALGOS = "aloe,awr,dagger,bc,ppo-sbc"
PNG = re.compile(r'<img[^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"')


# `aloe compare` runs each job with one thread; runs compared with its runs must too, since
# the thread count changes float summation order and PPO's updates amplify the difference.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def aloe(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aloe.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ONE_THREAD,
    )


def compare_args(out: Path) -> list[str]:
    return [
        "compare",
        "--preset",
        "smoke",
        "--seeds",
        "1",
        "--algos",
        ALGOS,
        "--out",
        str(out),
        "--jobs",
        "2",
        "--action-ope-states",
        "2",
        "--action-ope-chunks",
        "2",
        "--action-ope-rollouts",
        "1",
    ]


@pytest.fixture(scope="module")
def smoke_comparison(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "cmp"
    res = aloe(*compare_args(out))
    assert res.returncode == 0, res.stderr
    return out


@pytest.mark.slow
def test_smoke_comparison_writes_summary_and_report(smoke_comparison: Path) -> None:
    summary = json.loads((smoke_comparison / "summary.json").read_text())
    assert summary["task"] == DEFAULT_TASK and summary["preset"] == "smoke"
    assert list(summary["algos"]) == ALGOS.split(",")
    for algo, a in summary["algos"].items():
        n = 1 if algo == "bc" else 3  # BC is the warm start alone; smoke runs 2 iterations
        assert a["iterations"] == list(range(n)) and a["finished_seeds"] == [0]
        assert len(a["success_mean_per_iteration"]) == len(a["success_std_per_iteration"]) == n
        assert 0.0 <= a["final_success"] <= 1.0 and a["final_success_std"] == 0.0
        assert a["operator_steps"] > 0 and a["env_steps"] >= a["operator_steps"]
        assert a["wall_s"] > 0 and "mean_steps_to_success" in a
    algos = summary["algos"]
    assert algos["ppo-sbc"]["operator_steps"] == algos["bc"]["operator_steps"]  # demos only
    assert algos["ppo-sbc"]["env_steps"] > algos["bc"]["env_steps"]
    page = (smoke_comparison / "report.html").read_text()
    assert "Fig. 6" in page and "Fig. 4" in page
    # a plot only where success varies (smoke runs mostly score 0): else one line that says so
    varies = len({s for a in algos.values() for s in a["success_mean_per_iteration"]}) > 1
    assert len(PNG.findall(page)) >= 2 if varies else "at every iteration" in page
    assert "<table>" in page and "PPO+SBC" in page
    # the action-level OPE ran on ALOE's run alone (the only chunked Q critic), as its own job
    assert [a for a, s in algos.items() if s["action_ope"]] == ["aloe"]
    ope = algos["aloe"]["action_ope"]
    assert ope["seeds"] == 1 and -1.0 <= (ope["within_state_spearman"] or 0.0) <= 1.0
    entry = json.loads((smoke_comparison / "runs" / "aloe-s0" / "action_ope.json").read_text())
    assert entry["iteration"] == 2 and entry["counts"]["states"] == 2
    assert "Action-level OPE" in page


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_report_rebuilds(smoke_comparison: Path) -> None:
    before = json.loads((smoke_comparison / "summary.json").read_text())
    logs = sorted((smoke_comparison / "logs").glob("*.log"))
    started = [log.read_text().count("\n$ ") for log in logs]
    assert started == [2 if log.name == "aloe-s0.log" else 1 for log in logs]  # + its OPE
    res = aloe(*compare_args(smoke_comparison))
    assert res.returncode == 0, res.stderr
    assert [log.read_text().count("\n$ ") for log in logs] == started  # nothing started again
    (smoke_comparison / "report.html").unlink()
    res = aloe("report", str(smoke_comparison))
    assert res.returncode == 0, res.stderr
    after = json.loads((smoke_comparison / "summary.json").read_text())
    assert after == before
    rebuilt = (smoke_comparison / "report.html").read_text()
    assert "Fig. 6" in rebuilt and "Action-level OPE" in rebuilt


@pytest.mark.slow
def test_killed_ppo_run_resumes_to_the_same_metrics(
    smoke_comparison: Path, tmp_path, same_metrics
) -> None:
    """A baseline's state (Gaussian actor, value, success average) round-trips checkpoints."""
    out = tmp_path / "ppo"
    compared = json.loads((smoke_comparison / "runs" / "ppo-sbc-s0" / "config.json").read_text())
    budget = compared["ppo"]["rollout_steps"]
    assert budget == matched_rollout_steps(smoke_comparison, 0)  # matched to the operator loop
    cmd = [
        sys.executable,
        "-m",
        "aloe.cli",
        "train",
        "--preset",
        "smoke",
        "--algo",
        "ppo-sbc",
        "--out",
        str(out),
        "--no-progress",
        "--ppo.rollout-steps",
        str(budget),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ONE_THREAD
    )
    deadline = time.time() + 300
    while not (out / "checkpoints" / "iter-0001").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()  # type: ignore[union-attr]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    res = aloe("train", "--resume", str(out))
    assert res.returncode == 0, res.stderr

    def metrics(run: Path) -> list[dict]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]

    same_metrics(metrics(out), metrics(smoke_comparison / "runs" / "ppo-sbc-s0"))


# Fast checks: argument validation, run states, the summary's arithmetic.


def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys) -> None:
    for args, message in [
        (["--algos", "aloe,ppo"], "--algos"),
        (["--seeds", "0"], "--seeds (0): must be >= 1"),
        (["--preset", "fast"], "--preset"),
        (["--task", "nope-v3"], "unknown task"),
    ]:
        assert main(["compare", "--out", str(tmp_path / "c"), *args]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="twice"):
        parse_algos("aloe,aloe")


def _fake_run(root: Path, name: str, algo: str, successes: list[float], done: bool) -> None:
    run = root / "runs" / name
    run.mkdir(parents=True)
    iterations = 0 if algo == "bc" else 2
    (run / "config.json").write_text(json.dumps({"algo": algo, "iterations": iterations}))
    rows = [
        {
            "iteration": k,
            "success_rate": s,
            "mean_steps_to_success": 50.0 + k if s else None,
            "total_human_steps": 100 * (k + 1),
            "total_env_steps": 300 * (k + 1),
            "wall_s": 2.0,
        }
        for k, s in enumerate(successes)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_state(run).finished == done


def test_summary_aggregates_over_seeds(tmp_path) -> None:
    _fake_run(tmp_path, "aloe-s0", "aloe", [0.2, 0.4, 0.6], done=True)
    _fake_run(tmp_path, "aloe-s1", "aloe", [0.2, 0.6, 1.0], done=True)
    _fake_run(tmp_path, "aloe-s2", "aloe", [0.0, 0.5], done=False)  # still running
    _fake_run(tmp_path, "bc-s0", "bc", [0.3], done=True)
    summary = summarize(tmp_path)["algos"]
    a = summary["aloe"]
    assert a["seeds"] == [0, 1, 2] and a["finished_seeds"] == [0, 1]
    assert a["success_mean_per_iteration"] == pytest.approx([0.4 / 3, 0.5, 0.8])
    assert a["seeds_per_iteration"] == [3, 3, 2]
    assert a["success_std_per_iteration"][2] == pytest.approx(0.2)
    assert a["final_success"] == pytest.approx(0.8) and a["final_success_std"] == pytest.approx(0.2)
    assert a["operator_steps"] == 300 and a["env_steps"] == 900
    assert a["mean_steps_to_success"] == pytest.approx(52.0) and a["wall_s"] == pytest.approx(6.0)
    assert summary["bc"]["iterations"] == [0] and summary["bc"]["final_success"] == 0.3
    page = write_report(tmp_path)
    assert len(PNG.findall((tmp_path / "report.html").read_text())) >= 4
    assert page["algos"]["aloe"]["finished_seeds"] == [0, 1]


def test_steps_to_success_per_iteration_and_per_task(tmp_path) -> None:
    """Steps to success beside success: per iteration (mean ± std over seeds, a seed with no
    success left out), at the end, and per task with its average for a multi-task run."""
    for seed, steps in ((0, [60.0, 50.0]), (1, [None, 40.0])):
        run = tmp_path / "runs" / f"aloe-s{seed}"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"algo": "aloe", "iterations": 1}))
        rows = [
            {
                "iteration": k,
                "success_rate": 0.5,
                "mean_steps_to_success": v,
                "total_human_steps": 10,
                "total_env_steps": 30,
                "wall_s": 1.0,
                "success_by_task": {"a": 1.0, "b": 0.0 + seed},
                "steps_to_success_by_task": {"a": v, "b": 30.0 if seed else None},
            }
            for k, v in enumerate(steps)
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = summarize(tmp_path)["algos"]["aloe"]
    assert a["steps_to_success_mean_per_iteration"] == pytest.approx([60.0, 45.0])
    assert a["steps_to_success_std_per_iteration"] == pytest.approx([0.0, 5.0])
    assert a["mean_steps_to_success"] == 45.0 and a["mean_steps_to_success_std"] == 5.0
    assert a["success_by_task"] == {"a": 1.0, "b": 0.5}
    assert a["steps_to_success_by_task"] == {"a": 45.0, "b": 30.0}
    write_report(tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "Steps to success per iteration" in html and "average over tasks" in html
    assert "45.0 ± 5.0" in html


def test_action_ope_jobs_and_their_summary(tmp_path) -> None:
    """A finished ALOE state run on one MetaWorld task gets an action-level OPE job until
    its action_ope.json is for its last checkpoint at these sizes; the summary averages the
    scores over seeds, overall and per source."""
    from aloe.compare import action_ope_job

    args = CompareArgs(out=tmp_path, action_ope_states=4, action_ope_chunks=3)
    for name, algo in (("aloe-s0", "aloe"), ("aloe-s1", "aloe"), ("awr-s0", "awr")):
        _fake_run(tmp_path, name, algo, [0.1, 0.2, 0.3], done=True)
        cfg = {"algo": algo, "iterations": 2, "task": DEFAULT_TASK, "obs": "state"}
        (tmp_path / "runs" / name / "config.json").write_text(json.dumps(cfg))
    _fake_run(tmp_path, "aloe-s2", "aloe", [0.1], done=False)
    job = action_ope_job(args, RunSpec("aloe", 0, tmp_path))
    assert job is not None and job.kind == "action-ope" and job.label == "aloe-s0 action-level OPE"
    assert action_ope_job(args, RunSpec("awr", 0, tmp_path)) is None  # no Q critic
    assert action_ope_job(args, RunSpec("aloe", 2, tmp_path)) is None  # not finished
    off = CompareArgs(out=tmp_path, action_ope_states=0)
    assert action_ope_job(off, RunSpec("aloe", 0, tmp_path)) is None

    def entry(seed, rho, policy_rho, iteration=2, states=4):
        e = {
            "applicable": True,
            "iteration": iteration,
            "config": {"states": states, "chunks": 3, "rollouts": 2},
            "within_state_spearman": rho,
            "sign_accuracy": 0.5,
            "weights_spearman": None,
            "by_source": {"policy": {"within_state_spearman": policy_rho}},
        }
        (tmp_path / "runs" / f"aloe-s{seed}" / "action_ope.json").write_text(json.dumps(e))

    entry(0, 0.2, -0.1)
    assert action_ope_job(args, RunSpec("aloe", 0, tmp_path)) is None  # done
    entry(0, 0.2, -0.1, states=8)
    assert action_ope_job(args, RunSpec("aloe", 0, tmp_path)) is not None  # other sizes
    entry(0, 0.2, -0.1, iteration=1)
    assert action_ope_job(args, RunSpec("aloe", 0, tmp_path)) is not None  # older checkpoint
    entry(1, 0.6, 0.3)
    ope = summarize(tmp_path)["algos"]["aloe"]["action_ope"]
    assert ope["seeds"] == 2 and ope["within_state_spearman"] == pytest.approx(0.4)
    assert ope["within_state_spearman_std"] == pytest.approx(0.2)
    assert ope["policy_within_state_spearman"] == pytest.approx(0.1)
    assert ope["weights_spearman"] is None and ope["sign_accuracy"] == pytest.approx(0.5)
    assert summarize(tmp_path)["algos"]["awr"]["action_ope"] is None
    assert "Action-level OPE" in (write_report(tmp_path) and (tmp_path / "report.html").read_text())


def test_recap_runs_of_either_source_get_an_action_ope_and_their_indicator_is_summarised(
    tmp_path,
) -> None:
    """RECAP is scored with either advantage source (its labels; with `q` its critic too);
    the summary averages the indicator's agreement per source and the page shows it."""
    from aloe.compare import action_ope_job

    args = CompareArgs(out=tmp_path, action_ope_states=4, action_ope_chunks=3)
    for seed, advantage in ((0, "value"), (1, "q")):
        name = f"recap-s{seed}"
        _fake_run(tmp_path, name, "recap", [0.1, 0.2, 0.3], done=True)
        cfg = {"algo": "recap", "iterations": 2, "task": DEFAULT_TASK, "obs": "state"}
        cfg["recap"] = {"advantage": advantage}
        (tmp_path / "runs" / name / "config.json").write_text(json.dumps(cfg))
        assert action_ope_job(args, RunSpec("recap", seed, tmp_path)) is not None
        e = {
            "applicable": True,
            "iteration": 2,
            "config": {"states": 4, "chunks": 3, "rollouts": 2},
            "indicator_agreement": 0.5 + 0.25 * seed,
            "indicator_chance": 0.5,
            "indicator_sign_agreement": 0.75,
            "indicator_n": 4,
            "by_source": {"human": {"indicator_agreement": 0.25 * seed}},
        }
        (tmp_path / "runs" / name / "action_ope.json").write_text(json.dumps(e))
    ope = summarize(tmp_path)["algos"]["recap"]["action_ope"]
    assert ope["seeds"] == 2 and ope["indicator_agreement"] == pytest.approx(0.625)
    assert ope["human_indicator_agreement"] == pytest.approx(0.125)
    assert ope["indicator_n"] == 4 and ope["within_state_spearman"] is None
    write_report(tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "Improvement indicator against the truth" in html and "0.62 ± 0.12" in html


def test_started_runs_resume_and_fresh_ones_start(tmp_path) -> None:
    args = CompareArgs(out=tmp_path, preset="smoke", train_args="--iterations 1")
    _fake_run(tmp_path, "awr-s0", "awr", [0.0], done=False)
    started = RunSpec("awr", 0, tmp_path)
    assert train_command(args, started, run_state(started.dir))[-2:] == [
        "--resume",
        str(started.dir),
    ]
    fresh = RunSpec("dagger", 1, tmp_path)
    cmd = train_command(args, fresh, run_state(fresh.dir))
    assert cmd[-2:] == ["--iterations", "1"] and "--resume" not in cmd
    assert cmd[cmd.index("--algo") + 1] == "dagger" and cmd[cmd.index("--seed") + 1] == "1"


def test_ppo_budget_is_the_operator_loops_mean_env_steps_per_iteration(tmp_path) -> None:
    for name, steps in [
        ("aloe-s0", [50, 1000, 1200]),
        ("dagger-s0", [50, 800, 600]),
        ("awr-s1", [50, 5000, 5000]),
    ]:
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        rows = [{"iteration": k, "env_steps": n} for k, n in enumerate(steps)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert matched_rollout_steps(tmp_path, 0) == 900  # (1000+1200+800+600)/4, no warm start
    assert matched_rollout_steps(tmp_path, 2) is None
    ppo, aloe0 = RunSpec("ppo-sbc", 0, tmp_path), RunSpec("aloe", 0, tmp_path)
    assert not _ready(ppo, [aloe0, ppo], []) and _ready(
        ppo, [ppo, RunSpec("aloe", 1, tmp_path)], []
    )
    args = CompareArgs(out=tmp_path, preset="smoke")
    cmd = train_command(args, ppo, run_state(ppo.dir))
    assert cmd[-2:] == ["--ppo.rollout-steps", "900"]


def test_report_of_a_plain_run_dispatches_to_run_reports(tmp_path, capsys, monkeypatch) -> None:
    called: list[Path] = []
    fake = types.ModuleType("aloe.evaluation.report")
    fake.build_run_report = lambda d: called.append(d) or d / "report.html"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aloe.evaluation.report", fake)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    (tmp_path / "config.json").write_text("{}")  # what makes a directory a run
    assert main(["report", str(tmp_path)]) == 0 and called == [tmp_path]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # an install without it
    assert main(["report", str(tmp_path)]) == 2
    assert "not a comparison" in capsys.readouterr().err


def test_each_run_gets_only_the_train_args_it_reads() -> None:
    """One --train-args string serves every algorithm: another algorithm's options (with their
    values, attached or not) are left out of a run's command, the shared ones kept."""
    from aloe.compare import own_options

    tokens = [
        "--iterations",
        "1",
        "--aloe.beta",
        "-1",
        "--awr.value-steps=5",
        "--dagger.steps",
        "2",
        "--aloe.no-normalize-advantage",
        "--optim.batch-size",
        "8",
    ]
    assert own_options(tokens, "aloe") == [
        "--iterations",
        "1",
        "--aloe.beta",
        "-1",
        "--aloe.no-normalize-advantage",
        "--optim.batch-size",
        "8",
    ]
    assert own_options(tokens, "awr") == [
        "--iterations",
        "1",
        "--awr.value-steps=5",
        "--optim.batch-size",
        "8",
    ]
    assert own_options(tokens, "dagger") == [
        "--iterations",
        "1",
        "--dagger.steps",
        "2",
        "--optim.batch-size",
        "8",
    ]


def test_more_seeds_are_refused_where_the_runs_there_got_other_defaults(tmp_path) -> None:
    """A run saved by an older aloe (here: before the presets' update sampler became auto)
    and a new seed of the same options would get different configs: refused before any
    work, naming the field. Another algorithm's settings group does not count."""
    args = CompareArgs(out=tmp_path, algos="aloe", seeds=2, preset="smoke")
    run = RunSpec("aloe", 0, tmp_path).dir
    run.mkdir(parents=True)
    (tmp_path / "compare.json").write_text("{}")
    cfg = train_config(args, RunSpec("aloe", 0, tmp_path)).resolved()
    cfg.awr.beta = 123.0  # not ALOE's: ignored
    (run / "config.json").write_text(cfg.to_json())
    assert validate(args) == ["aloe"]
    cfg.aloe.update_sampler = "flow"
    (run / "config.json").write_text(cfg.to_json())
    with pytest.raises(UsageError, match=r"aloe.update_sampler 'flow' -> 'auto'"):
        validate(args)
    args.seeds = 1  # nothing new to start: the run resumes with its own config
    assert validate(args) == ["aloe"]
