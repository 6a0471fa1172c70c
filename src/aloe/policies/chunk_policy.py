"""`ChunkPolicy`s that collection and evaluation run: a trained actor, uniform noise."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from aloe.observation import Observations
from aloe.policies.flow import FlowPolicy


@contextmanager
def acting(actor: Any) -> Iterator[None]:
    """What a chunk to act on is sampled under. The compact actor: inference_mode (nothing
    sampled here is differentiated, and it keeps nothing between calls), one intra-op
    thread, as a few observations' ops are too small to split and each split waits for the
    second thread (on a busy machine, for a time slice), and oneDNN off, whose GELU sets up
    a primitive at every call (several times the native kernel's time at these sizes;
    docs/speed.md). Other actors: no_grad alone (a LeRobot policy may fill a cache that a
    later training step reads with gradients, and a VLA's ops are worth splitting)."""
    if not isinstance(actor, FlowPolicy):
        with torch.no_grad():
            yield
        return
    threads = torch.get_num_threads()
    onednn = bool(torch.backends.mkldnn.enabled)
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # a ContextProp
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn  # type: ignore[assignment]


class FlowChunkPolicy:
    """The actor as a `ChunkPolicy` for collection and evaluation (one observation at a time),
    and a `BatchChunkPolicy` for batched evaluation (`act_chunks`).

    Sampling noise comes from a generator reseeded per episode from (run seed, episode seed),
    so every episode depends on its seed alone: collection resumes mid-iteration exactly, and
    a batch of episodes, each with a generator of its own, draws the same noise.
    `obs` turns an observation into the actor's input (image features, the instruction's
    row); without it the input is the state and the only task.
    """

    def __init__(
        self,
        actor: Any,
        *,
        version: int,
        exec_horizon: int,
        seed: int,
        device: torch.device,
        obs: Observations | None = None,
    ) -> None:
        self.actor = actor
        self.version = version
        self.exec_horizon = exec_horizon
        self.seed = seed
        self.device = device
        self.obs = obs
        self.generator = torch.Generator(device=device)
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.generator.manual_seed(self._episode_seed(seed))

    def _episode_seed(self, seed: int) -> int:
        return hash((self.seed, seed)) % 2**63

    def episode_rng(self, seed: int) -> torch.Generator:
        """A generator of its own for the episode of `seed`, seeded as `reset(seed)` does."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self._episode_seed(seed))
        return generator

    def inputs(self, obs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(observation vector (1, S), task row (1,)) of one environment observation."""
        vec = obs["state"] if self.obs is None else self.obs.vector(obs)
        text = obs.get("instruction")  # a bare {"state": s} means the run's only task
        row = 0 if self.obs is None or text is None else self.obs.task_row(text)
        state = torch.as_tensor(vec, dtype=torch.float32, device=self.device)[None]
        return state, torch.tensor([row], device=self.device)

    def images(self, obs: Sequence[dict[str, Any]]) -> torch.Tensor | None:
        """The cameras' pixels (B, V, H, W, 3) uint8 of observations, for an actor that reads
        them (`Observations.pixels`); None for one that does not."""
        if self.obs is None or not self.obs.pixel_cameras:
            return None
        pixels = [self.obs.pixels(o) for o in obs]
        return torch.as_tensor(np.stack([p for p in pixels if p is not None]), device=self.device)

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        state, row = self.inputs(obs)
        images = self.images([obs])
        with acting(self.actor):
            chunk = self.actor.sample(state, row, 1, self.generator, images=images)
        return chunk[0, 0].cpu().numpy()

    def act_chunks(
        self, obs: Sequence[dict[str, Any]], rngs: Sequence[torch.Generator]
    ) -> np.ndarray:
        """Chunks (B, h, A) in one actor call: each row's noise from its episode's generator
        (`episode_rng`), the flow integrated on the stacked batch."""
        states, rows = zip(*(self.inputs(o) for o in obs), strict=True)
        images = self.images(obs)
        with acting(self.actor):
            chunks = self.actor.sample(
                torch.cat(states), torch.cat(rows), 1, list(rngs), images=images
            )
        return chunks[:, 0].cpu().numpy()


class ExploringPolicy:
    """Collection-only exploration (`collect.explore_std`): the wrapped policy's chunk plus
    i.i.d. Gaussian noise of std σ on every action, clipped to [-1, 1]. It widens the data
    at the policy's own states, so that a critic sees chunks of π that differ (issue 32,
    item 5); the stored action is the executed, noisy one. The noise has a generator of its
    own, reseeded per episode from the episode's seed, so an episode still depends on its
    seed alone (resume, Ray workers) and π's own sampling noise is unchanged."""

    STREAM = 0x6578706C  # keeps the noise's generator apart from any other seeded by `seed`

    def __init__(self, policy: Any, std: float) -> None:
        self.policy = policy
        self.std = float(std)
        self.version = policy.version
        self.exec_horizon = policy.exec_horizon
        self.rng = np.random.default_rng([self.STREAM, 0])

    def reset(self, seed: int) -> None:
        self.policy.reset(seed)
        self.rng = np.random.default_rng([self.STREAM, seed])

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        chunk = np.asarray(self.policy.act_chunk(obs))
        noisy = chunk + self.rng.normal(0.0, self.std, chunk.shape)
        return np.clip(noisy, -1.0, 1.0).astype(np.float32)


class RandomPolicy:
    """Uniform random actions: a policy that always needs the operator."""

    def __init__(self, action_dim: int = 4, horizon: int = 10, seed: int = 0) -> None:
        self.version = 0
        self.exec_horizon = horizon
        self.shape = (horizon, action_dim)
        self.seed = seed
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.rng = self.episode_rng(seed)

    def episode_rng(self, seed: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, seed])

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, self.shape).astype(np.float32)

    def act_chunks(
        self, obs: Sequence[dict[str, Any]], rngs: Sequence[np.random.Generator]
    ) -> np.ndarray:
        return np.stack([r.uniform(-1.0, 1.0, self.shape).astype(np.float32) for r in rngs])
