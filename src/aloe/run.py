"""A trained run as a Python object: `aloe.load_run(DIR)`.

run = aloe.load_run("runs/aloe")
chunks = run.sample(obs["state"], num_samples=4)        # (4, h, A) action chunks
q, q_pess = run.q_values(obs["state"], chunks[0])        # every member's Q, and Eq. 9
v = run.value(obs["state"])                               # V^π(s), Eq. 10
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from aloe import checkpoint
from aloe.algos.aloe import AloeLearner, q_pess
from aloe.config import TrainConfig
from aloe.critics.chunked_q import ChunkedQCritic
from aloe.envs.metaworld import TaskEnv
from aloe.nn import Normalizer
from aloe.observation import Observations
from aloe.policies.chunk_policy import FlowChunkPolicy
from aloe.policies.flow import FlowPolicy


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_learner(
    cfg: TrainConfig,
    state_mean: np.ndarray | None = None,
    state_std: np.ndarray | None = None,
    obs: Observations | None = None,
    instruction_features: torch.Tensor | None = None,
) -> AloeLearner:
    """Actor, critic and their optimisers for `cfg`; normalisers from dataset statistics.

    Without statistics (when a checkpoint will be loaded over it) the normalisers are
    placeholders whose buffers the checkpoint overwrites, and so are frozen instruction
    embeddings (zeros of the right shape).
    """
    obs = obs or Observations(cfg)
    dim, n = obs.dim, len(obs.tasks)
    if instruction_features is None and cfg.instructions != "learned":
        from aloe.vision.language import InstructionEncoder

        instruction_features = torch.zeros(n, InstructionEncoder.dim)
    mean = torch.zeros(dim) if state_mean is None else torch.as_tensor(state_mean).float()
    std = torch.ones(dim) if state_std is None else torch.as_tensor(state_std).float()
    shared: dict[str, Any] = {
        "obs_layout": obs.layout,
        "instruction_features": instruction_features,
    }
    actor = FlowPolicy(cfg.actor, state_dim=dim, action_dim=TaskEnv.ACTION_DIM, num_tasks=n,
                       state_normalizer=Normalizer.from_stats(mean, std), **shared)  # fmt: skip
    device = resolve_device(cfg.device)
    if cfg.algo in ("awr", "ppo-sbc"):  # a state-value critic instead of ALOE's Q ensemble
        return _baseline_learner(cfg, actor, Normalizer.from_stats(mean, std), device, shared)
    critic = ChunkedQCritic(cfg.critic, state_dim=dim, action_dim=TaskEnv.ACTION_DIM, num_tasks=n,
                            state_normalizer=Normalizer.from_stats(mean, std), **shared)  # fmt: skip
    # BC and DAgger train only the actor; they keep ALOE's learner (the critic stays idle).
    return AloeLearner(actor, critic, cfg.aloe, device=device)


def _baseline_learner(cfg: TrainConfig, actor: FlowPolicy, norm: Normalizer,
                      device: torch.device, shared: dict[str, Any]) -> AloeLearner:  # fmt: skip
    from aloe.algos.awr import AwrLearner, value_critic, value_range
    from aloe.algos.ppo_sbc import build_ppo_learner
    from aloe.envs.metaworld import expert_episode_length
    from aloe.envs.tasks import task_list

    dim, n = actor.state_norm.mean.numel(), actor.instruction.num_tasks
    if cfg.algo == "ppo-sbc":
        return build_ppo_learner(actor, cfg.critic, dim, norm, cfg.aloe, cfg.ppo, device, shared)
    c_fail = cfg.env.c_fail or max(expert_episode_length(t) for t in task_list(cfg.task))
    critic = value_critic(cfg.critic, dim, n, cfg.awr.num_bins, norm, **shared)
    v_range = value_range(cfg.awr, c_fail, cfg.aloe.gamma)
    return AwrLearner(actor, critic, cfg.aloe, cfg.awr, v_range, device=device)


class Run:
    """A run directory's config and its latest (or a chosen) checkpoint, ready to query."""

    def __init__(self, root: Path, iteration: int | None = None) -> None:
        self.root = Path(root)
        self.config = TrainConfig.from_json((self.root / "config.json").read_text())
        found = dict(checkpoint.complete(self.root / "checkpoints"))
        if not found:
            raise FileNotFoundError(f"{self.root}: no complete checkpoint")
        self.iteration = max(found) if iteration is None else iteration
        if self.iteration not in found:
            raise FileNotFoundError(f"{self.root}: no checkpoint for iteration {self.iteration}")
        self.state = checkpoint.load(found[self.iteration])
        self.obs = Observations(self.config)
        self.learner = build_learner(self.config, obs=self.obs)
        self.learner.load_state_dict(self.state["learner"])
        self.actor: FlowPolicy = self.learner.actor  # type: ignore[assignment]
        self.critic: ChunkedQCritic = self.learner.critic
        self.device = self.learner.device

    def _state(self, state: Any) -> torch.Tensor:
        s = torch.as_tensor(np.asarray(state), dtype=torch.float32, device=self.device)
        return s[None] if s.ndim == 1 else s

    def _tasks(self, n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.long, device=self.device)

    def sample(self, state: Any, num_samples: int = 1, seed: int | None = None) -> np.ndarray:
        """Action chunks for one state (num_samples, h, A) or a batch (B, num_samples, h, A)."""
        s = self._state(state)
        gen = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        out = self.actor.sample(s, self._tasks(len(s)), num_samples, gen).cpu().numpy()
        return out[0] if np.asarray(state).ndim == 1 else out

    @torch.no_grad()
    def q_values(self, state: Any, chunk: Any) -> tuple[np.ndarray, np.ndarray]:
        """Every member's Q (K, B) and Q_pess (B,) (Eq. 9) of chunks (B, h, A) at states."""
        self._require_q()
        s = self._state(state)
        a = torch.as_tensor(np.asarray(chunk), dtype=torch.float32, device=self.device)
        a = a[None] if a.ndim == 2 else a
        self.critic.eval()
        q = self.critic(s, self._tasks(len(s)), a)
        return q.cpu().numpy(), q_pess(q).cpu().numpy()

    @torch.no_grad()
    def value(self, state: Any, num_samples: int = 16, seed: int = 0) -> np.ndarray:
        """V^π(s) (B,): the mean Q_pess of chunks sampled from the policy (Eq. 10)."""
        from aloe.algos.aloe import estimate_value

        self._require_q()
        s = self._state(state)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        self.critic.eval()
        return estimate_value(self.critic, self.actor, s, self._tasks(len(s)), num_samples,
                              gen).cpu().numpy()  # fmt: skip

    def _require_q(self) -> None:
        if self.config.algo in ("awr", "ppo-sbc"):
            raise ValueError(f"{self.root}: algo {self.config.algo!r} learns a state value "
                             "V(s), not the chunked Q these methods read")  # fmt: skip

    def chunk_policy(self, seed: int = 0) -> FlowChunkPolicy:
        return FlowChunkPolicy(self.actor, version=self.iteration,
                               exec_horizon=self.config.exec_horizon, seed=seed,
                               device=self.device, obs=self.obs)  # fmt: skip


def load_run(root: str | Path, iteration: int | None = None) -> Run:
    """Load a run directory written by `aloe train` (its latest checkpoint by default)."""
    return Run(Path(root), iteration)
