import hashlib
import json
from pathlib import Path

import pytest
import torch

from aloe import checkpoint
from aloe.checkpoint import HASHES, STATE, TENSORS
from aloe.errors import UsageError


def _state():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    return {
        "net": net.state_dict(),
        "opt": opt.state_dict(),
        "rng": torch.get_rng_state(),
        "meta": {"iteration": 3, "betas": (0.9, 0.95), "none": None},
    }


def test_round_trip_keeps_tensors_int_keys_and_tuples(tmp_path):
    state = _state()
    path = checkpoint.save(tmp_path, 3, state)
    back = checkpoint.load(path)
    assert torch.equal(back["net"]["weight"], state["net"]["weight"])
    assert set(back["opt"]["state"]) == {0, 1}  # int keys survive JSON
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], state["opt"]["state"][0]["exp_avg"])
    assert back["meta"] == state["meta"] and torch.equal(back["rng"], state["rng"])
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    net.load_state_dict(back["net"])
    opt.load_state_dict(back["opt"])


def test_incomplete_checkpoints_are_ignored_and_none_is_overwritten(tmp_path):
    checkpoint.save(tmp_path, 0, {"a": torch.zeros(1)})
    (tmp_path / "iter-0001.tmp").mkdir()  # a kill during the write of checkpoint 1
    assert checkpoint.latest(tmp_path)[0] == 0
    with pytest.raises(FileExistsError):
        checkpoint.save(tmp_path, 0, {"a": torch.ones(1)})
    checkpoint.save(tmp_path, 1, {"a": torch.ones(1)})
    assert [k for k, _ in checkpoint.complete(tmp_path)] == [0, 1]


def test_corrupt_checkpoint_is_refused_with_its_path(tmp_path):
    path = checkpoint.save(tmp_path, 0, {"a": torch.zeros(1)})
    (path / TENSORS).write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint \(.*iter-0000\): tensors"):
        checkpoint.load(path)


# Unreadable checkpoints: every command starts from `load_latest`, which falls back.


def _two(root: Path) -> Path:
    """Checkpoints 0 and 1 (`a` = 0s and 1s); returns the latest's directory."""
    for k in (0, 1):
        checkpoint.save(root, k, {"a": torch.full((100,), float(k))})
    return root / "iter-0001"


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:-40])


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


DAMAGE = {
    "truncated tensors": (lambda p: _truncate(p / TENSORS), f"{TENSORS} is truncated ("),
    "no tensors": (lambda p: (p / TENSORS).unlink(), f"{TENSORS} is missing"),
    "bad header": (lambda p: (p / TENSORS).write_bytes(b"\xff" * 64), f"{TENSORS} is "),
    "broken state": (lambda p: (p / STATE).write_text('{"__dict__": [['), f"{STATE} is not valid"),
    "no state": (lambda p: (p / STATE).unlink(), f"{STATE} is missing"),
    "foreign state": (
        lambda p: (p / STATE).write_text('{"__tensor__": "b"}'),
        f"{STATE} does not match",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_an_unreadable_latest_checkpoint_falls_back_and_is_kept(tmp_path, capsys, damage):
    latest = _two(tmp_path)
    hurt, reason = DAMAGE[damage]
    hurt(latest)
    before = _snapshot(tmp_path)
    loaded = checkpoint.load_latest(tmp_path)
    assert loaded is not None and loaded.iteration == 0 and loaded.path == tmp_path / "iter-0000"
    assert torch.equal(loaded.state["a"], torch.zeros(100))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"aloe: skipping checkpoint {latest}: {reason}")
    assert err.endswith("; using iter-0000\n"), err
    assert _snapshot(tmp_path) == before  # a reader renames and deletes nothing


def test_a_resuming_trainer_sets_the_broken_checkpoint_aside_and_writes_it_anew(tmp_path, capsys):
    latest = _two(tmp_path)
    _truncate(latest / TENSORS)
    kept = (latest / TENSORS).read_bytes()
    assert checkpoint.load_latest(tmp_path, set_aside=True).iteration == 0  # type: ignore[union-attr]
    assert "(kept as iter-0001.broken-1); using iter-0000" in capsys.readouterr().err
    assert (tmp_path / "iter-0001.broken-1" / TENSORS).read_bytes() == kept  # the user's bytes
    assert [k for k, _ in checkpoint.complete(tmp_path)] == [0]
    checkpoint.save(tmp_path, 1, {"a": torch.full((100,), 2.0)})  # the re-run iteration
    (latest / STATE).unlink()
    assert checkpoint.load_latest(tmp_path, set_aside=True).iteration == 0  # type: ignore[union-attr]
    assert {p.name for p in tmp_path.iterdir()} == {
        "iter-0000",
        "iter-0001.broken-1",
        "iter-0001.broken-2",
    }


def test_no_readable_checkpoint_is_a_usage_error_that_changes_nothing(tmp_path):
    latest = _two(tmp_path)
    (latest / STATE).unlink()
    _truncate(tmp_path / "iter-0000" / TENSORS)
    before = _snapshot(tmp_path)
    with pytest.raises(
        UsageError,
        match=r"checkpoints \(.*\): none of them is readable \("
        r"iter-0001: state.json is missing; iter-0000: tensors.safetensors is "
        r"truncated \(\d+ of \d+ bytes\)\)$",
    ):
        checkpoint.load_latest(tmp_path, set_aside=True)
    assert _snapshot(tmp_path) == before
    assert checkpoint.load_latest(tmp_path / "no-such-dir") is None  # nothing yet: start afresh


# Hashes: every file a save writes is covered, and a change that still parses is caught.


def test_a_checkpoint_carries_the_sha256_of_its_tensors_and_state(tmp_path):
    path = checkpoint.save(tmp_path, 0, _state())
    assert sorted(p.name for p in path.iterdir()) == sorted([TENSORS, STATE, HASHES])
    hashes = json.loads((path / HASHES).read_text())
    by_hand = {n: hashlib.sha256((path / n).read_bytes()).hexdigest() for n in (TENSORS, STATE)}
    assert hashes == by_hand


def _flip(file: Path, at: int) -> None:
    data = bytearray(file.read_bytes())
    data[at] ^= 0x01
    file.write_bytes(bytes(data))


def _places(file: Path) -> list[int]:
    """Byte offsets spread over the whole file: its first and last byte and 30 between."""
    n = file.stat().st_size
    return sorted({0, n - 1, *(n * i // 31 for i in range(1, 31))})


@pytest.mark.parametrize("name", [TENSORS, STATE, HASHES])
def test_a_flipped_bit_anywhere_in_any_file_is_refused(tmp_path, name):
    """`load` refuses each flip with a reason naming the file it is in, and the restored
    checkpoint loads again."""
    path = checkpoint.save(tmp_path, 0, _state())
    file, good = path / name, (path / name).read_bytes()
    for at in _places(file):
        _flip(file, at)
        with pytest.raises(checkpoint.CheckpointError) as e:
            checkpoint.load(path)
        assert name in e.value.reason, (at, e.value.reason)
        file.write_bytes(good)
    checkpoint.load(path)


def _weight_flip(p: Path) -> None:
    """A flip inside the tensor data (past the header): the file still parses."""
    (n,) = __import__("struct").unpack("<Q", (p / TENSORS).read_bytes()[:8])
    _flip(p / TENSORS, 8 + n + 5)


CHANGED = {
    "a weight": (_weight_flip, f"{TENSORS} does not match its SHA-256 in {HASHES}"),
    "a state value": (
        lambda p: (p / STATE).write_text((p / STATE).read_text().replace("3", "4")),
        f"{STATE} does not match its SHA-256 in {HASHES}",
    ),
    "a hash": (
        lambda p: (p / HASHES).write_text((p / HASHES).read_text().replace('": "', '": "0', 1)),
        " does not match its SHA-256 in",
    ),
    "no manifest": (lambda p: (p / HASHES).unlink(), f"{HASHES} is missing"),
    "a foreign manifest": (
        lambda p: (p / HASHES).write_text('{"state.json": "00"}'),
        f"{HASHES} does not list the hashes of {TENSORS}, {STATE}",
    ),
}


@pytest.mark.parametrize("change", CHANGED)
def test_a_changed_checkpoint_that_still_parses_falls_back_as_a_truncated_one(
    tmp_path, capsys, change
):
    root = tmp_path / "checkpoints"
    checkpoint.save(root, 0, {"a": torch.zeros(100), "meta": {"iteration": 0}})
    latest = checkpoint.save(root, 1, {"a": torch.ones(100), "meta": {"iteration": 3}})
    hurt, reason = CHANGED[change]
    hurt(latest)
    kept = _snapshot(latest)
    loaded = checkpoint.load_latest(root, set_aside=True)
    assert loaded is not None and loaded.iteration == 0
    assert torch.equal(loaded.state["a"], torch.zeros(100))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"aloe: skipping checkpoint {latest}: "), err
    assert reason in err and err.endswith("(kept as iter-0001.broken-1); using iter-0000\n")
    assert _snapshot(root / "iter-0001.broken-1") == kept  # the user's bytes, set aside


def test_a_checkpoint_saved_before_hashes_loads_with_a_notice(tmp_path, capsys):
    """The layout older versions wrote: the two files, no manifest, no header metadata."""
    from safetensors.torch import save_file

    old = tmp_path / "iter-0000"
    old.mkdir()
    skeleton, tensors = checkpoint.flatten({"a": torch.arange(3.0)})
    save_file(tensors, str(old / TENSORS))
    (old / STATE).write_text(json.dumps(skeleton))
    loaded = checkpoint.load_latest(tmp_path)
    assert loaded is not None and torch.equal(loaded.state["a"], torch.arange(3.0))
    err = capsys.readouterr().err
    assert err == (
        f"aloe: checkpoint {old} has no {HASHES} (saved before checkpoints carried hashes): "
        "loaded without verifying its files\n"
    )


def test_load_run_falls_back_past_a_truncated_checkpoint(fake_run, capsys):
    import aloe

    latest = _two_of(fake_run)
    _truncate(latest / TENSORS)
    run = aloe.load_run(fake_run)
    assert run.iteration == 0
    assert f"aloe: skipping checkpoint {latest}: {TENSORS} is truncated" in capsys.readouterr().err
    assert latest.is_dir()


@pytest.mark.parametrize("loader", ["load_run", "serve"])
def test_every_loader_falls_back_past_a_changed_checkpoint(fake_run, capsys, loader):
    """`aloe eval`, `collect --policy` and `plot-q` load through `load_run`, `aloe serve`
    through `Published`; each verifies the hashes and takes the previous checkpoint."""
    import aloe

    latest = _two_of(fake_run)
    _weight_flip(latest)
    if loader == "serve":
        from aloe.serve.policy import Published

        iteration = Published(fake_run).current.version
    else:
        iteration = aloe.load_run(fake_run).iteration
    assert iteration == 0
    err = capsys.readouterr().err
    assert f"aloe: skipping checkpoint {latest}: {TENSORS} does not match its SHA-256" in err
    assert latest.is_dir()


def _two_of(run: Path) -> Path:
    """A second checkpoint of `run` (a copy of its first); returns its directory."""
    root = run / "checkpoints"
    return checkpoint.save(root, 1, checkpoint.load(root / "iter-0000"))


@pytest.fixture
def fake_run(tmp_path):
    """A run directory with one checkpoint of an untrained smoke learner (no training)."""
    from aloe.config import preset
    from aloe.run import build_learner

    cfg = preset("smoke")
    cfg.out = tmp_path / "run"
    cfg = cfg.resolved()
    cfg.out.mkdir()
    (cfg.out / "config.json").write_text(cfg.to_json())
    state = {"learner": build_learner(cfg).state_dict(), "history": [{"iteration": 0}]}
    checkpoint.save(cfg.out / "checkpoints", 0, state)
    return cfg.out


TINY = [
    "--preset",
    "smoke",
    "--no-progress",
    "--iterations",
    "1",
    "--eval-episodes",
    "1",
    "--bc-steps",
    "5",
    "--num-demos",
    "1",
    "--collect.success-quota",
    "1",
    "--collect.max-episodes",
    "1",
    "--aloe.critic-steps",
    "5",
    "--aloe.actor-steps",
    "2",
    "--env.max-steps",
    "60",
    "--operator.profile",
    "oracle",  # its demonstrations fit in 60 steps
]


RESUME_DAMAGE = {
    "truncated": (lambda p: _truncate(p / TENSORS), f"{TENSORS} is truncated"),
    "flipped": (_weight_flip, f"{TENSORS} does not match its SHA-256 in {HASHES}"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", RESUME_DAMAGE)
def test_train_resume_past_a_damaged_last_checkpoint_reruns_its_iteration(
    tmp_path, capsys, same_metrics, damage
):
    from aloe.cli import main

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    latest = out / "checkpoints" / "iter-0001"
    hurt, reason = RESUME_DAMAGE[damage]
    hurt(latest)
    kept = _snapshot(latest)
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"aloe: skipping checkpoint {latest}: {reason}" in err
    assert "(kept as iter-0001.broken-1); using iter-0000" in err
    assert _snapshot(out / "checkpoints" / "iter-0001.broken-1") == kept
    assert [k for k, _ in checkpoint.complete(out / "checkpoints")] == [0, 1]
    checkpoint.load(latest)  # written anew, readable
    again = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for rows in (metrics, again):
        for row in rows:
            row.pop("wall_s")
    same_metrics(again, metrics)  # the re-run iteration equals the lost one
