"""Where a policy fragment ends in a labelled failure: the critic's advantage of the chunk
that reaches the failure, against its ground truth (issue 13).

    MUJOCO_GL=osmesa python benchmarks/truncated_chunk_probe.py RUN_DIR [RUN_DIR ...]
        [--states 12] [--chunks 4] [--rollouts 2]

For each ALOE run: `--states` buffer rows whose data chunk reaches its policy fragment's
labelled failure within h steps (so it is cut to n < h steps), drawn at random. At each, the
action-level OPE (`aloe.evaluation.action_ope.run_action_ope` at those rows) gives the true
Q^π of the data chunk (it replays the failure) and of `--chunks` chunks of π (restored
rollouts), and the critic's Q_pess of each. V^π is then read three ways: the truth, the
critic on π's full chunks (`--aloe.value-steps full`, Eq. 10 as written) and the critic on
π's chunks over the data chunk's n steps (`--aloe.value-steps data`). Prints one JSON object
per run: the mean A = Q(data) − V of each, and how often A > 0.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from aloe import data as D
from aloe.evaluation.action_ope import ActionOpeConfig, run_action_ope
from aloe.evaluation.ope import load_buffer
from aloe.evaluation.weights import fragment_failure
from aloe.run import load_run


def failing_rows(frames: D.Frames, horizon: int, n: int, seed: int) -> np.ndarray:
    """n policy rows whose chunk reaches its fragment's labelled failure."""
    rows = np.arange(len(frames[D.ACTION]))
    reaches, _ = fragment_failure(frames, rows, horizon)
    pool = rows[reaches & (np.asarray(frames[D.SOURCE]).astype(str) == "policy")]
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, min(n, len(pool)), replace=False))


def probe(path: str, states: int, chunks: int, rollouts: int) -> dict:
    run = load_run(path)
    frames, _ = load_buffer(run)
    rows = failing_rows(frames, run.config.horizon, states, seed=0)
    res = run_action_ope(
        run, ActionOpeConfig(states=len(rows), chunks=chunks, rollouts=rollouts), rows
    )
    c, q_true, q_pess = res.cands, res.q_true, res.q_pess  # (N, C + 1), data chunk first
    n, c1 = c.chunks.shape[:2]
    with torch.no_grad():  # π's chunks over the data chunk's executed steps
        state = torch.as_tensor(np.repeat(c.states, c1 - 1, 0), dtype=torch.float32)
        chunk = torch.as_tensor(c.chunks[:, 1:].reshape(-1, *c.chunks.shape[2:]))
        valid = torch.as_tensor(np.repeat(c.valid[:, :1], c1 - 1, 1).reshape(-1, c.valid.shape[-1]))
        task = torch.as_tensor(np.repeat(c.batch.task_index.numpy(), c1 - 1))
        q = run.critic.eval()(
            state.to(run.device), task.to(run.device), chunk.to(run.device), valid.to(run.device)
        )
        v_data = q.min(0).values.view(n, c1 - 1).mean(1).cpu().numpy()

    def reading(q_data: np.ndarray, v: np.ndarray) -> dict:
        a = q_data - v
        return {
            "q_data": float(q_data.mean()),
            "v": float(v.mean()),
            "advantage": float(a.mean()),
            "advantage_positive": float((a > 0).mean()),
        }

    return {
        "run": path,
        "states": int(n),
        "restore_exact": float(res.exact.mean()),
        "truth": reading(q_true[:, 0], q_true[:, 1:].mean(1)),
        "critic_full_chunks": reading(q_pess[:, 0], q_pess[:, 1:].mean(1)),
        "critic_data_steps": reading(q_pess[:, 0], v_data),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--states", type=int, default=12)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--rollouts", type=int, default=2)
    args = ap.parse_args()
    for path in args.runs:
        print(json.dumps(probe(path, args.states, args.chunks, args.rollouts)))


if __name__ == "__main__":
    main()
