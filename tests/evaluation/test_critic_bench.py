"""The critic benchmark's pure parts (benchmarks/critic_bench.py, its scores in action_ope)."""

import math
import zipfile

import numpy as np
import pytest

from aloe.evaluation.action_ope import load_truth, save_truth
from aloe.evaluation.action_scores import best_of_n_regret, split_half_spearman
from tests.scripts import ROOT, load_script


@pytest.fixture(scope="module")
def bench():
    return load_script(ROOT / "benchmarks" / "critic_bench.py")


def test_best_of_n_regret_is_the_mean_of_pis_chunks_minus_the_critics_pick():
    # the data chunk (index 0) is never a candidate, however high the critic rates it
    q_true = np.array([[0.0, 1.0, 4.0, 7.0], [0.0, -2.0, -4.0, -6.0]])
    q_pess = np.array([[99.0, 0.0, 1.0, 2.0], [99.0, 0.0, 5.0, 1.0]])
    # state 0 picks 7 of mean 4: -3 (good); state 1 picks -4 of mean -4: 0 (chance)
    np.testing.assert_allclose(best_of_n_regret(q_pess, q_true), [-3.0, 0.0])
    worst = best_of_n_regret(-q_true, q_true)
    np.testing.assert_allclose(worst, [3.0, 2.0])  # the anti-critic picks the worst: 4-1, -4+6


def test_split_half_spearman_pairs_even_and_odd_rollouts():
    base = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    noise = np.array([0.1, -0.1, 0.2, -0.2])  # rollouts 0, 2 vs 1, 3 keep the order
    truth = base[..., None] + noise
    rho = split_half_spearman(truth)
    assert rho[0] == pytest.approx(1.0)
    assert math.isnan(rho[1])  # a constant half has no ranking
    flipped = truth.copy()
    flipped[0, :, 1::2] = -flipped[0, :, 1::2]  # the odd half ranks the chunks backwards
    assert split_half_spearman(flipped)[0] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="2 rollouts"):
        split_half_spearman(truth[..., :1])


def test_truth_file_round_trips_without_pickle(tmp_path):
    arrays = {
        "truth": np.arange(24.0).reshape(2, 3, 4),
        "source": np.array(["policy", "demo"]),
        "stall_best": np.array([-np.inf, 0.5]),
        "rows": np.array([3, 9]),
    }
    path = tmp_path / "truth.npz"
    save_truth(path, arrays, {"run": "/r", "gamma": 0.9})
    loaded, meta = load_truth(path)
    assert meta == {"run": "/r", "gamma": 0.9}
    for name, value in arrays.items():
        np.testing.assert_array_equal(loaded[name], value)
        assert loaded[name].dtype == value.dtype
    with zipfile.ZipFile(path) as z:  # every member loads with allow_pickle=False
        assert sorted(z.namelist()) == sorted(f"{k}.npy" for k in [*arrays, "meta"])
    with pytest.raises(ValueError, match="no pickle"):
        save_truth(tmp_path / "bad.npz", {"x": np.array([{}], dtype=object)}, {})


def test_scores_give_the_within_state_spearman_per_source(bench):
    source = np.array(["policy", "policy", "human"])
    q_true = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0], [1.0, 2.0, 3.0]])
    truth = np.repeat(q_true[..., None], 2, axis=-1)
    q_pess = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    members = np.stack([q_pess, q_pess + 2.0])  # the min is member 0; spread 1 everywhere
    s = bench.scores(members, truth, source)
    # policy: +1 and (ranks 3,1,2 against 1,2,3) -0.5 -> 0.25; human: -1
    assert s["rho"] == {"policy": pytest.approx(0.25), "human": pytest.approx(-1.0)}
    assert s["spread"] == pytest.approx(1.0)
    assert s["ceiling_policy"] == pytest.approx(1.0)  # identical halves
    # picks among chunks 1, 2: chunk 2 everywhere except the human state (chunk 1)
    assert s["regret"] == pytest.approx(np.mean([-0.5, -0.5, 0.5]))
    assert s["regret_oracle"] == pytest.approx(-0.5)


def test_explained_variance_on_constructed_cases(bench):
    x = np.arange(6.0)
    assert bench.r_squared(x[:, None], 2 * x + 1)[0] == pytest.approx(1.0)
    bins = np.array([0, 0, 1, 1])
    assert bench.between_bins(bins, np.array([1.0, 1.0, 3.0, 3.0])) == pytest.approx(1.0)
    assert bench.between_bins(bins, np.array([1.0, 3.0, 1.0, 3.0])) == pytest.approx(0.0)
    truth = np.zeros((2, 2, 2))
    truth[1] = 2.0  # only the states differ
    parts = bench.variance_parts(truth)
    assert parts == {"between_states": 1.0, "between_chunks": 0.0, "rollout_noise": 0.0}


def test_overrides_parse_by_the_fields_type_and_refuse_an_unknown_field(bench, capsys):
    from aloe.config import preset

    cfg = bench.overridden(
        preset("smoke"), ["optim.critic_lr=1e-3", "critic.num_q=4", "aloe.normalize_advantage=0"]
    )
    assert (cfg.optim.critic_lr, cfg.critic.num_q, cfg.aloe.normalize_advantage) == (
        1e-3,
        4,
        False,
    )
    with pytest.raises(SystemExit):
        bench.overridden(preset("smoke"), ["critic.no_such_field=1"])
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no field 'critic.no_such_field'" in err


def test_split_features_and_terciles(bench):
    arrays = {
        "stall_best": np.array([-np.inf, 2.0, 5.0]),
        "stall_idle": np.array([0.0, 30.0, 6.0]),
        "progress": np.array([np.nan, 1.5, 5.0]),
        "frame": np.array([0, 150, 30]),
    }
    meta = {"operator": {"patience": 60}, "max_steps": 300}
    f = bench.split_features(arrays, np.ones(3, bool), meta)
    np.testing.assert_allclose(f["idle"], [0.0, 0.5, 0.1])
    np.testing.assert_allclose(f["best"], [0.0, 2.0, 5.0])  # unseen: 0
    np.testing.assert_allclose(f["progress"], [1.5, 1.5, 5.0])  # unseen: the lowest seen
    np.testing.assert_allclose(f["gap"], [0.0, 0.5, 0.0])
    np.testing.assert_allclose(f["t"], [0.0, 0.5, 0.1])
    np.testing.assert_array_equal(bench.terciles(np.arange(6.0)), [0, 0, 1, 1, 2, 2])
