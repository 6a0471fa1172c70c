"""A trained actor as the `ChunkPolicy` that collection and evaluation run."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aloe.observation import Observations


class FlowChunkPolicy:
    """The actor as a `ChunkPolicy` for collection and evaluation (one observation at a time).

    Sampling noise comes from a generator reseeded per episode from (run seed, episode seed),
    so every episode depends on its seed alone: collection resumes mid-iteration exactly.
    `obs` turns an observation into the actor's input (image features, the instruction's
    row); without it the input is the state and the only task.
    """

    def __init__(self, actor: Any, *, version: int, exec_horizon: int, seed: int,
                 device: torch.device, obs: Observations | None = None) -> None:  # fmt: skip
        self.actor, self.version, self.exec_horizon = actor, version, exec_horizon
        self.seed, self.device, self.obs = seed, device, obs
        self.generator = torch.Generator(device=device)
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.generator.manual_seed(hash((self.seed, seed)) % 2**63)

    def inputs(self, obs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(observation vector (1, S), task row (1,)) of one environment observation."""
        vec = obs["state"] if self.obs is None else self.obs.vector(obs)
        text = obs.get("instruction")  # a bare {"state": s} means the run's only task
        row = 0 if self.obs is None or text is None else self.obs.task_row(text)
        state = torch.as_tensor(vec, dtype=torch.float32, device=self.device)[None]
        return state, torch.tensor([row], device=self.device)

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        chunk = self.actor.sample(*self.inputs(obs), 1, self.generator)
        return chunk[0, 0].cpu().numpy()
