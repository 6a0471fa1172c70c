"""Action-level OPE on cases whose answer is known: deterministic replays and synthetic scores."""

import math

import numpy as np
import pytest
from known_replays import CFG, GAMMA, Expert, H

from aloe import data as D
from aloe.envs.metaworld import TaskEnv
from aloe.errors import UsageError
from aloe.evaluation.action_ope import (
    ActionOpeConfig,
    ActionOpeResult,
    Candidates,
    chunk_truth,
    critic_members,
    sample_candidates,
    stratified_rows,
)
from aloe.evaluation.action_scores import score_states

# Fixed-action chunks that waste a different amount of time before the expert takes over.
FIXED = np.array([[0.0, 0.0, 0.0, -1.0], [0.0, 0.0, 1.0, -1.0], [1.0, -1.0, 0.5, 1.0]])


def fixed_chunks(states, n):
    """Chunk c of every state repeats FIXED[c] for H steps (deterministic, state-blind)."""
    chunks = np.repeat(FIXED[:n, None], H, axis=1).astype(np.float32)
    return np.broadcast_to(chunks, (len(states), *chunks.shape)).copy()


def hand_return(env, restorer, row, prefix, expert):
    """Restore `row`, step `prefix`, then the expert to the end: Σ_k γ^k r_k (Eq. 14)."""
    state, actions, g, k = restorer.restore(env, row).obs, list(prefix), 0.0, 0
    while True:
        action = actions.pop(0) if actions else expert.act(state)
        out, reward, terminated, truncated, _ = env.step(action)
        g, k, state = g + GAMMA**k * reward, k + 1, out["state"]
        if terminated or truncated:
            return g


def lookup_critic(cands, truth, transform):
    """A critic whose members are known transforms of each (state, chunk)'s ground truth."""
    table = {
        (s.tobytes(), a.tobytes()): t
        for s, chunks, ts in zip(cands.states, cands.chunks, truth, strict=True)
        for a, t in zip(chunks, ts, strict=True)
    }

    def q_fn(states, chunks, valid):
        t = np.array(
            [table[(s.tobytes(), a.tobytes())] for s, a in zip(states, chunks, strict=True)]
        )
        return np.stack([transform(t), transform(t) + 1.0])  # Q_pess = min = transform(t)

    return q_fn


@pytest.fixture(scope="module")
def known(recorded):
    """Candidates at one state per source, their truth by `chunk_truth` and by hand."""
    frames, restorer = recorded
    cfg = ActionOpeConfig(states=3, chunks=3, rollouts=1, watch=False, seed=1)
    cands = sample_candidates(frames, restorer, fixed_chunks, cfg, H, GAMMA)
    expert, env = Expert(), TaskEnv(CFG)
    truth, exact = chunk_truth(
        lambda: TaskEnv(CFG), restorer, cands, expert, gamma=GAMMA, rollouts=1, batch_envs=4
    )
    by_hand = np.array(
        [
            [
                hand_return(env, restorer, int(row), chunk[: int(v.sum())], expert)
                for chunk, v in zip(chunks, valid, strict=True)
            ]
            for row, chunks, valid in zip(cands.rows, cands.chunks, cands.valid, strict=True)
        ]
    )
    return cfg, cands, truth, exact, by_hand


def test_candidates_are_one_state_per_source_with_the_data_chunk_first(recorded, known):
    frames, _ = recorded
    _, cands, *_ = known
    assert sorted(cands.source.tolist()) == ["demo", "human", "policy"]
    assert cands.chunks.shape == (3, 4, H, 4) and cands.valid.shape == (3, 4, H)
    for i, row in enumerate(cands.rows):  # index 0: the executed actions from the row
        n = int(cands.valid[i, 0].sum())
        np.testing.assert_array_equal(cands.chunks[i, 0, :n], frames[D.ACTION][row : row + n])
        np.testing.assert_array_equal(cands.chunks[i, 1:], fixed_chunks(cands.states[:1], 3)[0])
        assert cands.valid[i, 1:].all()


def test_ground_truth_of_each_chunk_equals_a_hand_written_restore_and_step_loop(known):
    _, cands, truth, exact, by_hand = known
    assert exact.all() and truth.shape == (3, 4, 1)
    np.testing.assert_allclose(truth[..., 0], by_hand, rtol=1e-9)
    assert (np.ptp(by_hand, axis=1) > 0).all()  # every state has a ranking to recover


@pytest.mark.parametrize(
    ("transform", "rho", "sign"),
    [(lambda t: 2.0 * t + 5.0, 1.0, 1.0), (lambda t: -t, -1.0, 0.0)],
    ids=["affine", "reversed"],
)
def test_scores_of_a_critic_that_is_a_known_transform_of_the_truth(known, transform, rho, sign):
    cfg, cands, truth, exact, _ = known
    q = critic_members(lookup_critic(cands, truth[..., 0], transform), cands)
    weights = np.exp(np.clip((q.min(0)[:, 0] - q.min(0)[:, 1:].mean(1)) / 1e3, -5, 5))  # Eq. 11
    result = ActionOpeResult(cfg, GAMMA, 1, cands, truth, exact, q, weights)
    scores = result.scores()
    assert scores["within_state_spearman"] == pytest.approx(rho)
    assert scores["within_state_spearman_n"] == 3 and scores["constant_truth"] == 0
    assert scores["sign_accuracy"] == sign and scores["weight_sign_accuracy"] == sign
    assert scores["advantage_spearman"] == pytest.approx(rho)
    assert scores["weights_spearman"] == pytest.approx(rho)
    d = result.as_dict()
    assert d["counts"] == {"states": 3, "chunks": 12, "rollouts": 12}
    assert set(d["by_source"]) == {"demo", "human", "policy"}
    assert all(s["states"] == 1 for s in d["by_source"].values())
    assert d["restore_exact"] == 1.0 and d["q_true_se_mean"] is None  # R = 1
    assert d["samples"][0]["q_true"] == pytest.approx(truth[0, :, 0].tolist())


def test_constant_truth_is_counted_apart_and_sources_are_scored_separately():
    q_true = np.array([[1.0, 2, 3], [5, 5, 5], [3, 2, 1], [0, 1, 2]])  # state 1: no ranking
    q_pess = np.array([[1.0, 2, 3], [1, 2, 3], [1, 2, 3], [7, 7, 7]])  # state 3: flat critic
    s = score_states(q_pess, q_true, weights=np.array([1.5, 1.0, 0.5, 1.2]))
    assert s["states"] == 4 and s["constant_truth"] == 1 and s["constant_estimate"] == 1
    assert s["within_state_spearman_n"] == 2 and s["within_state_spearman"] == pytest.approx(0.0)
    # true A = q[0] − mean(q[1:]): −1.5, 0, +1.5, −1.5; critic's: −1.5, −1.5, −1.5, 0
    assert s["sign_n"] == 3 and s["sign_accuracy"] == pytest.approx(2 / 3)
    assert s["true_advantage_positive"] == pytest.approx(1 / 3)
    assert s["weight_sign_accuracy"] == pytest.approx(0.0)
    assert all(math.isfinite(v) for v in s.values())  # nothing undefined in the mix
    only_flat = score_states(q_pess[1:2], q_true[1:2])
    assert only_flat["constant_truth"] == 1 and math.isnan(only_flat["within_state_spearman"])
    assert only_flat["sign_n"] == 0 and "weights_pearson" not in only_flat

    cands = Candidates(
        np.arange(4),
        np.array(["policy", "human", "policy", "demo"]),
        np.zeros((4, 2)),
        np.zeros((4, 3, 1, 1)),
        np.ones((4, 3, 1)),
        None,
    )
    result = ActionOpeResult(
        ActionOpeConfig(states=4, chunks=2, rollouts=1),
        GAMMA,
        1,
        cands,
        q_true[..., None],
        np.ones(4, bool),
        q_pess[None],
        None,
    )
    by = result.as_dict()["by_source"]
    assert list(by) == ["demo", "policy", "human"]  # D.SOURCES order
    assert by["policy"]["states"] == 2
    assert by["policy"]["within_state_spearman"] == pytest.approx(0.0)
    assert by["human"]["constant_truth"] == 1 and by["demo"]["constant_estimate"] == 1


def test_stratified_rows_share_the_states_equally_and_pass_on_a_small_sources_share():
    source = np.array(["demo"] * 10 + ["policy"] * 10 + ["human"] * 2)
    rows = stratified_rows(source, np.arange(22), 9, seed=0)
    counts = {s: int((source[rows] == s).sum()) for s in D.SOURCES}
    assert counts == {"demo": 4, "policy": 3, "human": 2} and len(set(rows)) == 9
    assert (np.diff(rows) > 0).all()
    assert len(stratified_rows(source, np.arange(22), 100, seed=0)) == 22  # all there are
    np.testing.assert_array_equal(stratified_rows(source, np.arange(22), 9, seed=0), rows)


@pytest.mark.parametrize("field", ["states", "chunks", "rollouts"])
def test_config_checks_name_the_field(field):
    cfg = ActionOpeConfig(**{field: -1})
    with pytest.raises(UsageError, match=f"action_ope.{field} \\(-1\\)"):
        cfg.check()
