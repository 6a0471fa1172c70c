"""A run directory resumes wherever it now is, and every config (from flags or from a run's
config.json) passes the same checks before anything is created, rewritten or recorded."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, get_type_hints

import pytest
import torch

from aloe import checkpoint, train
from aloe.algos.recap import RecapConfig
from aloe.cli import main
from aloe.collect import CollectConfig
from aloe.config import TrainConfig, preset
from aloe.config_json import LEGACY_KEYS, MAY_BE_INFINITE
from aloe.errors import UsageError
from aloe.operators.scripted import OperatorConfig
from aloe.run_dir import RUN_LOCK, run_lock, start_run_dir


def _tiny(out: Path) -> TrainConfig:
    """The smoke preset cut to a warm start and one iteration of a few steps each."""
    cfg = preset("smoke", "reach-v3")
    cfg.out, cfg.progress = out, False
    cfg.iterations, cfg.num_demos, cfg.bc_steps, cfg.eval_episodes = 1, 1, 5, 1
    cfg.exec_horizon = cfg.horizon
    cfg.env.max_steps, cfg.env.c_fail = 40, 100.0  # c_fail given: no expert episodes to time
    cfg.operator = OperatorConfig(profile="oracle")  # its demonstrations fit in 40 steps
    cfg.collect = CollectConfig(success_quota=1, max_episodes=1, operator_max_steps=100)
    cfg.actor = dataclasses.replace(cfg.actor, num_flow_steps=2)
    cfg.aloe = dataclasses.replace(cfg.aloe, critic_steps=3, actor_steps=2)
    return cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-checkpoint run, created with a relative --out."""
    base = tmp_path_factory.mktemp("orig")
    cwd = os.getcwd()
    os.chdir(base)
    try:
        train.train(_tiny(Path("run")))
    finally:
        os.chdir(cwd)
    return base / "run"


def _metrics(run: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def _digest(root: Path) -> str:
    """Every file's relative path and bytes: any change to the directory changes it."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(root)}\0".encode() + path.read_bytes())
    return h.hexdigest()


def _interrupted_copy(run: Path, to: Path) -> Path:
    """A copy of `run` as if killed before its last checkpoint (its episodes kept)."""
    shutil.copytree(run, to)
    last = checkpoint.latest(to / "checkpoints")
    assert last is not None and last[0] == 1
    shutil.rmtree(last[1])
    return to


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run `aloe ARGV` in-process; it must refuse with one line on stderr and exit 2."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


# --- relocatable run directories ------------------------------------------------------------


def test_config_json_does_not_name_the_run_location(run_dir: Path) -> None:
    assert "out" not in json.loads((run_dir / "config.json").read_text())
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert str(run_dir).encode() not in path.read_bytes(), path


@pytest.mark.slow  # trains the interrupted iteration again
def test_a_moved_run_resumes_in_place(
    run_dir: Path, tmp_path: Path, same_metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "old").mkdir()
    moved = _interrupted_copy(run_dir, tmp_path / "old" / "run")
    moved = Path(shutil.move(moved, tmp_path / "new" / "run"))
    # as an older version wrote it: a relative `out` that resolves to the old place here
    cfg = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**cfg, "out": "run"}))
    monkeypatch.chdir(tmp_path / "old")
    assert main(["train", "--resume", str(moved), "--no-progress"]) == 0
    assert not (tmp_path / "old" / "run").exists()
    assert [k for k, _ in checkpoint.complete(moved / "checkpoints")] == [0, 1]
    same_metrics(_metrics(moved), _metrics(run_dir))


@pytest.mark.slow  # trains the interrupted iteration again
def test_a_copied_run_resumes_in_place_and_leaves_the_original_alone(
    run_dir: Path, tmp_path: Path, same_metrics
) -> None:
    before = _digest(run_dir)
    copy = _interrupted_copy(run_dir, tmp_path / "copy")
    events = set((copy / "tb").iterdir())
    history = train.train(TrainConfig(out=copy, progress=False), resume=True)
    assert [row["iteration"] for row in history] == [0, 1]
    assert _digest(run_dir) == before
    assert set((copy / "tb").iterdir()) > events  # its TensorBoard events are the copy's
    same_metrics(_metrics(copy), _metrics(run_dir))


@pytest.mark.slow  # two tiny trainings
@pytest.mark.parametrize("advantage", ["value", "q"])
def test_a_recap_run_resumes_bit_exactly_and_loads_acting_on_positive(
    tmp_path: Path, advantage: str
) -> None:
    """RECAP with either advantage source and classifier-free guidance (β_cfg = 2): a run
    killed before its last checkpoint resumes to the same metrics and the same weights;
    `aloe.load_run` gives the actor acting on "positive" with the run's β_cfg."""
    from aloe import load_run
    from aloe.policies.indicator import POSITIVE, Guidance

    cfg = _tiny(tmp_path / "run")
    cfg.algo = "recap"
    cfg.recap = dataclasses.replace(
        cfg.recap, advantage=advantage, value_steps=3, actor_steps=2, cfg_beta=2.0
    )
    history = train.train(cfg)
    assert 0 <= history[-1]["positive_policy_frac"] <= 1
    copy = _interrupted_copy(cfg.out, tmp_path / "copy")
    train.train(TrainConfig(out=copy, progress=False), resume=True)
    assert _metrics(copy) == _metrics(cfg.out)
    whole, resumed = (checkpoint.load_latest(r / "checkpoints") for r in (cfg.out, copy))
    assert whole is not None and resumed is not None
    for key, value in whole.state["learner"]["actor"].items():
        assert torch.equal(value, resumed.state["learner"]["actor"][key]), key
    eps = whole.state["learner"]["recap_thresholds"]  # the last labels' ε_ℓ, by task
    assert set(eps) == {0} and eps == resumed.state["learner"]["recap_thresholds"]
    run = load_run(copy)
    assert run.actor.guidance == Guidance(POSITIVE, 2.0) and run.actor.indicator is not None
    assert run.sample(torch.zeros(run.obs.dim).numpy(), num_samples=2, seed=0).shape == (2, 10, 4)


# --- config.json goes through the flags' checks ---------------------------------------------


def _set(path: str, value: Any) -> Any:
    def change(cfg: dict[str, Any]) -> str:
        *parents, name = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[name] = value
        return json.dumps(cfg, indent=1)

    return change


CORRUPTIONS = [
    (_set("iterations", "abc"), "config field iterations ('abc'): must be an integer"),
    (_set("iterations", True), "config field iterations (True): must be an integer"),
    (
        _set("algo", "foo"),
        "config field algo ('foo'): must be one of aloe, awr, dagger, bc, ppo-sbc, recap",
    ),
    (_set("horizon", -1), "config field horizon (-1): must be >= 1"),
    (_set("aloe.beta", -5), "config field aloe.beta (-5.0): must be > 0"),
    (_set("exec_horizon", 999), "config field exec_horizon (999): must be in 1..horizon (10)"),
    (_set("aloe.beta", "inf"), "config field aloe.beta (inf): must be a finite number"),
    (_set("seed", -1), "config field seed (-1): must be >= 0"),
    (_set("progress", 1), "config field progress (1): must be true or false or None"),
    (_set("collect.handback_steps", -1), "config field collect.handback_steps (-1): must be >= 0"),
    (_set("operator.patience", -5), "config field operator.patience (-5): must be >= 0"),
    (_set("aloe.bta", 1.0), "config field aloe.bta: unknown field (did you mean beta?)"),
    (_set("actor.horizon", 5), "config field actor.horizon (5): must be 10"),
    (_set("vision.cameras", "corner"), "config field vision.cameras ('corner'): must be a list"),
    (lambda cfg: json.dumps(cfg, indent=1) + "\n}", "config.json: not valid JSON at line "),
    (lambda cfg: "[]", "config.json: config ('list'): must be a JSON object"),
]


@pytest.mark.parametrize("corrupt, message", CORRUPTIONS)
def test_a_bad_config_json_is_refused_with_nothing_changed(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], corrupt: Any, message: str
) -> None:
    copy = _interrupted_copy(run_dir, tmp_path / "copy")
    config = copy / "config.json"
    config.write_text(corrupt(json.loads(config.read_text())))
    before = _digest(copy)
    err = _error(capsys, ["train", "--resume", str(copy)])
    assert err.startswith(f"aloe train: error: {config}: ") and message in err, err
    assert _digest(copy) == before
    with pytest.raises(UsageError, match="config"):
        TrainConfig.load(copy)  # `aloe eval` and `load_run` read it the same way


def test_an_old_config_json_with_out_still_loads(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "out": "/somewhere/else"}))
    assert TrainConfig.load(copy).out == copy


# config.json of `aloe train --preset smoke`, saved before the algorithms owned their settings
# (ALOE's group held the optimiser, batch size, γ and HG-DAgger's steps)
V0_SMOKE = Path(__file__).parent / "fixtures" / "config_v0_smoke.json"


def test_a_config_json_of_the_old_layout_loads_as_the_same_run() -> None:
    old = json.loads(V0_SMOKE.read_text())
    assert "optim" not in old and {k.split(".")[1] for k in LEGACY_KEYS} <= set(old["aloe"])
    cfg = TrainConfig.from_json(V0_SMOKE.read_text())
    # today's smoke preset, field for field, in the setting of its day (issue 32 moved the
    # defaults to the human profile with action-level failures)
    then = preset("smoke")
    then.operator.profile, then.env.failures.action_level = "oracle", False
    then.recap = RecapConfig()  # RECAP came later: a config without its group reads defaults
    then.aloe.update_sampler = "flow"  # as runs of its day sampled π (the field's default)
    assert cfg == then.resolved()
    saved = json.loads(cfg.to_json())
    for key, news in LEGACY_KEYS.items():
        for new in news:
            group, name = new.split(".")
            assert saved[group][name] == old["aloe"][key.split(".")[1]], new


def test_a_run_whose_config_json_has_the_old_layout_resumes(tmp_path: Path) -> None:
    """The old smoke config cut to a tiny run (with keys both layouts share, and a moved one,
    aloe.batch_size): a run interrupted with that config.json resumes to the metrics of the
    same run uninterrupted."""
    old = json.loads(V0_SMOKE.read_text())
    old.update(task="reach-v3", iterations=1, num_demos=1, bc_steps=5, eval_episodes=1)
    old["env"].update(task="reach-v3", max_steps=40, c_fail=100.0)
    old["collect"].update(success_quota=1, max_episodes=1, operator_max_steps=100)
    old["actor"]["num_flow_steps"] = 2
    old["aloe"].update(critic_steps=3, actor_steps=2, batch_size=8)
    text = json.dumps(old)
    cfg = TrainConfig.from_json(text)
    assert cfg.optim.batch_size == 8 and cfg.dagger.steps == 2
    whole = tmp_path / "whole"
    train.train(dataclasses.replace(cfg, out=whole, progress=False))
    resumed = _interrupted_copy(whole, tmp_path / "resumed")
    (resumed / "config.json").write_text(text)
    assert main(["train", "--resume", str(resumed), "--no-progress"]) == 0
    assert _metrics(resumed) == _metrics(whole)


# --- non-finite values ----------------------------------------------------------------------


def _float_fields(obj: Any, path: str = "") -> list[str]:
    names = []
    for name, hint in get_type_hints(type(obj)).items():
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value):
            names += _float_fields(value, f"{path}{name}.")
        elif hint in (float, float | None):
            names.append(f"{path}{name}")
    return names


def _with(cfg: TrainConfig, dotted: str, value: Any) -> TrainConfig:
    cfg = copy.deepcopy(cfg)
    *parents, name = dotted.split(".")
    node: Any = cfg
    for p in parents:
        node = getattr(node, p)
    setattr(node, name, value)
    return cfg


def test_every_float_field_refuses_inf_and_nan_unless_inf_means_something() -> None:
    base = preset("smoke").resolved()
    fields = _float_fields(base)
    assert {"aloe.beta", "optim.q_abs_max", "env.c_fail", "ppo.target_kl"} <= set(fields)
    for name in fields:
        for value in (math.inf, -math.inf, math.nan):
            cfg = _with(base, name, value)
            if name in MAY_BE_INFINITE and value == math.inf:
                cfg.validate()
                continue
            with pytest.raises(UsageError, match=rf"^config field {name} \({value}\): must be"):
                cfg.validate()


def test_q_abs_max_inf_round_trips_through_config_json() -> None:
    cfg = _with(preset("smoke").resolved(), "optim.q_abs_max", math.inf)
    text = cfg.to_json()
    assert json.loads(text)["optim"]["q_abs_max"] == "inf"  # JSON has no infinity
    back = TrainConfig.from_json(text)
    assert back.optim.q_abs_max == math.inf and back.to_json() == text


# --- flags: refused before anything is created ----------------------------------------------


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")

BAD_FLAGS = [
    pytest.param(["--device", "cuda"], "config field device ('cuda'): this torch", marks=NO_CUDA),
    (["--device", "foo"], "config field device ('foo'): must be cpu, cuda, cuda:N, mps or auto"),
    (["--seed", "-1"], "config field seed (-1): must be >= 0"),
    (
        ["--obs", "image", "--vision.cameras", "nope"],
        "config field vision.cameras (('nope',)): must name cameras of pick-place-v3: corner,",
    ),
    (
        ["--task", "cube-double", "--obs", "image", "--vision.cameras", "corner"],
        "config field vision.cameras (('corner',)): must name cameras of cube-double: front,",
    ),
    (["--aloe.beta", "inf"], "config field aloe.beta (inf): must be a finite number"),
    (["--optim.q-abs-max", "nan"], "config field optim.q_abs_max (nan): must be a number"),
    (["--collect.handback-steps", "-1"], "config field collect.handback_steps (-1): must be >= 0"),
    (["--operator.patience", "-5"], "config field operator.patience (-5): must be >= 0"),
    (
        ["--horizon", "100000", "--exec-horizon", "5"],
        "config field optim.batch_size and horizon (32, 100000): an update would need about",
    ),
    (["--optim.batch-size", "100000000"], "config field optim.batch_size and horizon (100000000,"),
    (["--algo", "awr", "--aloe.beta", "3"], "--aloe.beta: an option of --algo aloe, which an"),
    (["--algo", "bc", "--critic.num-q", "3"], "--critic.num-q: an --algo bc run never reads it"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS)
def test_bad_flags_are_refused_before_anything_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    out = tmp_path / "run"
    err = _error(capsys, ["train", "--preset", "smoke", "--out", str(out), *flags])
    assert message in err, err
    assert list(tmp_path.iterdir()) == []
    train.prepare_run(_tiny(out), resume=False)  # the corrected run: no "directory exists"


def test_an_unusable_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("mine")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    before = _digest(tmp_path)
    for out, message in [
        (tmp_path / "file", "is a file; give a new directory"),
        (tmp_path / "file" / "run", f"cannot be created: {tmp_path / 'file'} is a file"),
        (Path("/proc/aloe-run"), "is under /proc, a kernel file system"),
        (tmp_path / "full", "exists and is not empty; give a new directory or an empty one"),
    ]:
        err = _error(capsys, ["train", "--out", str(out)])
        assert f"--out ({out}): {message}" in err, err
    assert _digest(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        err = _error(capsys, ["train", "--out", str(locked / "run")])
        assert f"cannot write in {locked}" in err
    finally:
        locked.chmod(0o755)


# --- what --resume accepts ------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--aloe.beta", "3"],
        ["--iterations=4"],
        ["--preset", "smoke"],
        ["--task", "reach-v3"],
        ["--algo", "awr"],
        ["--out", "elsewhere"],
    ],
)
def test_resume_refuses_options_that_change_the_run(
    run_dir: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    before = _digest(run_dir)
    err = _error(capsys, ["train", "--resume", str(run_dir), "--no-progress", *flags])
    flag = flags[0].split("=")[0]
    assert err == (
        f"aloe train: error: --resume ({flag}): only --progress/--no-progress and "
        f"--device may be given with --resume; the run's config is "
        f"{run_dir / 'config.json'}"
    )
    assert _digest(run_dir) == before


def test_resume_takes_device_and_progress(run_dir: Path, tmp_path: Path) -> None:
    cfg = train.resumed_config(run_dir, device="auto", progress=True)
    assert (cfg.device, cfg.progress, cfg.out) == ("auto", True, run_dir)
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--resume", str(copy), "--device", "cpu", "--no-progress"]) == 0
    assert json.loads((copy / "config.json").read_text()) == json.loads(
        (run_dir / "config.json").read_text()
    )


@NO_CUDA
def test_resume_on_a_missing_device_is_refused_with_nothing_changed(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _digest(run_dir)
    err = _error(capsys, ["train", "--resume", str(run_dir), "--device", "cuda"])
    assert "config field device ('cuda'): this torch" in err
    assert _digest(run_dir) == before


@pytest.mark.parametrize(
    "where, message",
    [
        ("nowhere", "does not exist; give a run directory written by `aloe train`"),
        (".", "not a run directory (no config.json)"),
    ],
)
def test_resume_needs_a_run_directory(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    err = _error(capsys, ["train", "--resume", where])
    assert f"--resume ({where}): {message}" in err
    assert list(tmp_path.iterdir()) == []


def _flip(path: Path) -> None:
    """XOR 4 bytes a third of the way into `path`."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 4):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _more_episodes_in_metrics(run: Path) -> None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows[1]["episodes"] += 3
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _emptied(run: Path) -> None:
    shutil.rmtree(run / "dataset")
    (run / "dataset").mkdir()


DATA_LOSSES = {
    "deleted": (
        lambda run: shutil.rmtree(run / "dataset"),
        "its dataset/ is missing, but metrics.jsonl records {n} episodes; restore it; "
        "the run cannot go on without its data",
    ),
    "emptied": (_emptied, "its dataset/ holds no store (no meta/info.json), but metrics.jsonl"),
    "bit flip": (
        lambda run: _flip(run / "dataset/data/chunk-000/file-000.parquet"),
        "its dataset/ is damaged: {run}/dataset/data/chunk-000/file-000.parquet: sha256 "
        "differs from meta/checksums.json: corrupt",
    ),
    "fewer episodes than the history": (
        _more_episodes_in_metrics,
        "its dataset/ holds {k} episodes of iteration 1, but metrics.jsonl records {m} collected",
    ),
}


@pytest.mark.parametrize("loss", DATA_LOSSES)
def test_resume_refuses_a_run_without_its_data(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], loss: str
) -> None:
    run = tmp_path / "copy"
    shutil.copytree(run_dir, run)
    rows = _metrics(run)
    n, k = sum(r["episodes"] for r in rows), rows[1]["episodes"]
    damage, message = DATA_LOSSES[loss]
    damage(run)
    before = _digest(run)
    err = _error(capsys, ["train", "--resume", str(run), "--no-progress"])
    assert err.startswith(f"aloe train: error: --resume ({run}): ")
    assert message.format(run=run, n=n, k=k, m=k + 3) in err
    assert _digest(run) == before  # nothing recreated, nothing written


def test_train_help_mentions_resume(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--resume DIR" in capsys.readouterr().out


# --- the sub-configs `aloe collect` validates too -------------------------------------------


def test_collect_and_operator_configs_refuse_negative_counts() -> None:
    with pytest.raises(UsageError, match=r"^operator.patience \(-5\): must be >= 0"):
        OperatorConfig(patience=-5).validate()
    with pytest.raises(UsageError, match=r"^collect.handback_steps \(-1\): must be >= 0"):
        CollectConfig(handback_steps=-1).validate()
    with pytest.raises(UsageError, match=r"^operator.noise_std \(inf\): must be a finite"):
        OperatorConfig(noise_std=math.inf).validate()
    OperatorConfig().validate()
    CollectConfig().validate()


def test_a_second_trainer_on_a_run_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While a process trains a run (it holds `.train.lock`), `aloe train --resume` on the
    same directory is refused before it reads or writes anything; once the holder is gone
    (however it ended) the lock is free again."""
    import subprocess
    import sys

    cfg = preset("smoke")
    cfg.out = tmp_path / "run"
    start_run_dir(cfg.resolved())
    hold = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'4242'); print('held', flush=True); "
        "time.sleep(120)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(cfg.out / RUN_LOCK)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in cfg.out.iterdir())
        assert main(["train", "--resume", str(cfg.out)]) == 2
        err = capsys.readouterr().err
        assert "--resume" in err and "is being trained by another process (pid 4242)" in err
        assert sorted(p.name for p in cfg.out.iterdir()) == before
    finally:
        holder.kill()
        holder.wait()
    with run_lock(cfg, resume=True):  # free again
        assert (cfg.out / RUN_LOCK).read_text() == str(os.getpid())


def test_the_episode_bound_is_the_seed_spacing_of_an_iteration():
    """`collect.max_episodes <= SEEDS_PER_ITERATION` keeps a store's seeds distinct only
    while `episode_seed` spaces iterations that far apart."""
    from aloe.config import SEEDS_PER_ITERATION
    from aloe.data import episode_seed

    assert episode_seed(3, 2, 0) - episode_seed(3, 1, 0) == SEEDS_PER_ITERATION
    last = episode_seed(3, 1, SEEDS_PER_ITERATION - 1)
    assert last < episode_seed(3, 2, 0)
