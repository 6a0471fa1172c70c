"""Time ChunkSampler.sample against one step of a paper-size chunked transformer critic.

    python benchmarks/bench_sampler.py [--quick] [--device cpu]

Prints one JSON object: sampler ms per batch and batches/s, critic ms per step, their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from aloe import data
from aloe.datasets.sampler import ChunkSampler


def synthetic_frames(
    episodes: int, steps: int, state_dim: int, action_dim: int, seed: int
) -> dict[str, np.ndarray]:
    """Episodes of `steps` rows cut into 1-3 fragments (policy, then human takeovers)."""
    rng = np.random.default_rng(seed)
    num = episodes * steps
    episode = np.repeat(np.arange(episodes), steps)
    fragment = np.zeros(num, dtype=np.int32)
    done = np.zeros(num, dtype=bool)
    truncated = np.zeros(num, dtype=bool)
    source = np.empty(num, dtype=object)
    for e in range(episodes):
        lo = e * steps
        cuts = np.sort(rng.choice(np.arange(20, steps - 20), rng.integers(0, 3), replace=False))
        bounds = np.array([lo, *(lo + cuts), lo + steps])
        for f, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            fragment[a:b] = f
            source[a:b] = "demo" if e % 10 == 0 else ("policy" if f == 0 else "human")
        done[bounds[1:-1] - 1] = True  # takeovers are labelled failures
        done[lo + steps - 1] = rng.random() < 0.5  # success, else a time limit
        truncated[lo + steps - 1] = not done[lo + steps - 1]
    state = rng.normal(size=(num, state_dim)).astype(np.float32)
    return {
        data.STATE: state,
        data.NEXT_STATE: np.roll(state, -1, axis=0),
        data.ACTION: rng.uniform(-1, 1, size=(num, action_dim)).astype(np.float32),
        data.REWARD: np.where(done, -float(steps), -1.0).astype(np.float32),
        data.DONE: done,
        data.TRUNCATED: truncated,
        data.SOURCE: source,
        data.FRAGMENT: fragment,
        "episode_index": episode,
        "frame_index": np.tile(np.arange(steps), episodes),
        "index": np.arange(num),
        "task_index": episode % 5,
    }


class Critic(nn.Module):
    """Tokens [q_1..q_K, s, a_1..a_h, x_1..x_V] -> K Q-values, as the paper's critic."""

    def __init__(self, state_dim: int, action_dim: int, feat_dim: int, k: int, width: int = 256):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(k, width) * 0.02)
        self.state_in = nn.Linear(state_dim, width)
        self.action_in = nn.Linear(action_dim, width)
        self.feat_in = nn.Linear(feat_dim, width)
        layer = nn.TransformerEncoderLayer(width, 8, 4 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 6, enable_nested_tensor=False)
        self.head = nn.Linear(width, 1)

    def forward(self, state: torch.Tensor, actions: torch.Tensor, feats: torch.Tensor):
        q = self.queries.expand(state.shape[0], -1, -1)
        tokens = [q, self.state_in(state)[:, None], self.action_in(actions), self.feat_in(feats)]
        out = self.encoder(torch.cat(tokens, 1))
        return self.head(out[:, : q.shape[1]]).squeeze(-1)


def timed(fn: Callable[[], object], reps: int, device: torch.device, warmup: int = 1) -> float:
    """Mean seconds per call after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help="one cold critic step, fewer sampler repetitions (< 30 s on 2 cores)",
    )
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--horizon", type=int, default=50)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    sample_reps, critic_reps = (300, 1) if args.quick else (3000, 5)
    state_dim, action_dim, feat_dim, k, cameras = 39, 4, 768, 2, 3

    frames = synthetic_frames(args.episodes, args.steps, state_dim, action_dim, seed=0)
    start = time.perf_counter()
    sampler = ChunkSampler(frames, horizon=args.horizon, gamma=0.99, device=device)
    init_s = time.perf_counter() - start
    sample_s = timed(lambda: sampler.sample(args.batch), sample_reps, device)

    critic = Critic(state_dim, action_dim, feat_dim, k).to(device)
    opt = torch.optim.AdamW(critic.parameters(), lr=3e-5, betas=(0.9, 0.95))
    batch = sampler.sample(args.batch)
    feats = torch.randn(args.batch, cameras, feat_dim, device=device)

    def critic_step() -> None:
        q = critic(batch.state, batch.actions, feats)
        loss = (q - batch.reward[:, None]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    critic_s = timed(critic_step, critic_reps, device, warmup=0 if args.quick else 1)
    print(
        json.dumps(
            {
                "device": str(device),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "torch_threads": torch.get_num_threads(),
                "frames": len(frames["index"]),
                "horizon": args.horizon,
                "batch": args.batch,
                "sampler_init_s": round(init_s, 4),
                "sample_ms": round(sample_s * 1e3, 4),
                "sample_batches_per_s": round(1.0 / sample_s, 1),
                "critic_tokens": k + 1 + args.horizon + cameras,
                "critic_step_ms": round(critic_s * 1e3, 2),
                "critic_over_sample": round(critic_s / sample_s, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
