import pytest
import torch

from aloe import checkpoint


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
    (path / "tensors.safetensors").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="iter-0000: unreadable checkpoint"):
        checkpoint.load(path)
