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
from aloe.algos.aloe_math import estimate_value, q_pess
from aloe.algos.best_of_n import BestOfNPolicy, acting_policy
from aloe.algos.context import Learner, LearnerParts
from aloe.algos.table import ALGORITHMS
from aloe.config import TrainConfig
from aloe.envs.tasks import task_dims
from aloe.errors import bad, require
from aloe.nn import Normalizer, resolve_device, set_compiled
from aloe.observation import Observations
from aloe.policies.base import Actor
from aloe.policies.chunk_policy import FlowChunkPolicy
from aloe.policies.flow import FlowPolicy
from aloe.policies.lerobot_actor import build_actor
from aloe.policies.lerobot_vision import vision_tower
from aloe.vision.language import InstructionEncoder


def observations(cfg: TrainConfig, device: torch.device | str = "cpu") -> Observations:
    """A run's observations; with `--vision.encoder lerobot` the camera encoder is the run's
    VLA's own tower (from `--lerobot.*`), which the policies layer builds."""
    encoder = None
    if cfg.obs == "image" and cfg.vision.encoder == "lerobot":
        encoder = vision_tower(cfg.lerobot, device)
    return Observations(cfg, device, encoder=encoder)


def build_learner(
    cfg: TrainConfig,
    state_mean: np.ndarray | None = None,
    state_std: np.ndarray | None = None,
    obs: Observations | None = None,
    instruction_features: torch.Tensor | None = None,
    c_fail: float | None = None,
) -> Learner:
    """The actor, and around it the learner of `cfg.algo` (its table row builds it), with
    normalisers from dataset statistics.

    Without statistics (when a checkpoint will be loaded over it) the normalisers are
    placeholders whose buffers the checkpoint overwrites, and so are frozen instruction
    embeddings (zeros of the right shape), and so are the HL-Gauss bins without `c_fail`
    (the environment's C_fail of Eq. 14).
    """
    obs = obs or observations(cfg)
    dim = obs.dim
    n = len(obs.tasks)
    action_dim = task_dims(cfg.task, cfg.env).action
    if instruction_features is None and cfg.instructions != "learned":
        instruction_features = torch.zeros(n, InstructionEncoder.dim)
    mean = torch.zeros(dim) if state_mean is None else torch.as_tensor(state_mean).float()
    std = torch.ones(dim) if state_std is None else torch.as_tensor(state_std).float()
    tokens: dict[str, Any] = {
        "obs_layout": obs.layout,
        "instruction_features": instruction_features,
    }
    actor: Any
    if cfg.actor_kind == "lerobot":
        actor = build_actor(
            cfg.lerobot,
            obs.instructions,
            state_dim=dim,
            horizon=cfg.horizon,
            action_dim=action_dim,
            robot_state_dim=obs.layout[0],
            state_normalizer=Normalizer.from_stats(mean, std),
            cameras=obs.pixel_cameras,
        )
    else:
        actor = FlowPolicy(
            cfg.actor,
            state_dim=dim,
            action_dim=action_dim,
            num_tasks=n,
            state_normalizer=Normalizer.from_stats(mean, std),
            horizon=cfg.horizon,
            **tokens,
        )
    row = ALGORITHMS[cfg.algo]
    parts = LearnerParts(
        cfg,
        row.settings(cfg),
        actor,
        state_dim=dim,
        action_dim=action_dim,
        num_tasks=n,
        normalizer=lambda: Normalizer.from_stats(mean, std),
        tokens=tokens,
        device=resolve_device(cfg.device),
        c_fail=c_fail,
    )
    learner = row.build_learner(parts)
    set_compiled(cfg.compile, *vars(learner).values())  # its networks: actor, critics
    return learner


class Run:
    """A run directory's config and its latest (or a chosen) checkpoint, ready to query."""

    def __init__(self, root: Path, iteration: int | None = None, what: str = "run") -> None:
        self.root = Path(root)
        require_run_dir(self.root, what)
        self.config = read_run_config(self.root)
        self.algorithm = ALGORITHMS[self.config.algo]
        self.value_kind = self.algorithm.value_kind(self.config)  # "q", "state" or None
        self.iteration, _, self.state = _checkpoint(self.root / "checkpoints", iteration)
        self.obs = observations(self.config)
        self.learner = build_learner(self.config, obs=self.obs)
        self.learner.load_state_dict(self.state["learner"])
        self.actor: Actor = self.learner.actor
        self.critic = self.learner.critic  # a chunked Q ensemble, or V(s) (`value_kind`)
        self.device = self.learner.device

    def _state(self, state: Any) -> torch.Tensor:
        s = torch.as_tensor(np.asarray(state), dtype=torch.float32, device=self.device)
        return s[None] if s.ndim == 1 else s

    def _clock(self, time: Any) -> torch.Tensor | None:
        return None if time is None else self._state(time)

    def _tasks(self, n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.long, device=self.device)

    def sample(
        self, state: Any, num_samples: int = 1, seed: int | None = None, images: Any = None
    ) -> np.ndarray:
        """Action chunks for one state (num_samples, h, A) or a batch (B, num_samples, h, A).
        `images`, uint8 (V, H, W, 3) or (B, V, H, W, 3) in the run's camera order, are for a
        VLA that reads the cameras (`run.obs.pixel_cameras`)."""
        s = self._state(state)
        gen = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        pixels = None
        if images is not None:
            pixels = torch.as_tensor(np.asarray(images, dtype=np.uint8), device=self.device)
            pixels = pixels[None] if pixels.ndim == 4 else pixels
        chunks = self.actor.sample(s, self._tasks(len(s)), num_samples, gen, images=pixels)
        out = chunks.cpu().numpy()
        return out[0] if np.asarray(state).ndim == 1 else out

    @torch.no_grad()
    def q_values(self, state: Any, chunk: Any, time: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Every member's Q (K, B) and Q_pess (B,) (Eq. 9) of chunks (B, h, A) at states;
        `time`, the episode clock (B, 2) (`aloe.data.episode_clock`), for a critic with
        `critic.time_features`."""
        self._require_q()
        s = self._state(state)
        a = torch.as_tensor(np.asarray(chunk), dtype=torch.float32, device=self.device)
        a = a[None] if a.ndim == 2 else a
        self.critic.eval()
        q = self.critic(s, self._tasks(len(s)), a, None, self._clock(time))
        return q.cpu().numpy(), q_pess(q).cpu().numpy()

    @torch.no_grad()
    def value(self, state: Any, num_samples: int = 16, seed: int = 0, time: Any = None) -> Any:
        """V^π(s): the mean Q_pess of chunks sampled from the policy (Eq. 10); a float for
        one state (S,), an array (B,) for a batch (B, S); `time` as in `q_values`."""
        self._require_q()
        s = self._state(state)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        self.critic.eval()
        tasks = self._tasks(len(s))
        clock = self._clock(time)
        v = estimate_value(self.critic, self.actor, s, tasks, num_samples, gen, time=clock)
        out = v.cpu().numpy()
        return float(out[0]) if np.asarray(state).ndim == 1 else out

    def _require_q(self) -> None:
        if self.value_kind == "state":
            raise ValueError(
                f"{self.root}: algo {self.config.algo!r} learns a state value "
                "V(s), not the chunked Q these methods read"
            )

    def chunk_policy(self, seed: int = 0) -> FlowChunkPolicy:
        return FlowChunkPolicy(
            self.actor,
            version=self.iteration,
            exec_horizon=self.config.exec_horizon,
            seed=seed,
            device=self.device,
            obs=self.obs,
        )

    def acting_policy(self, seed: int = 0) -> FlowChunkPolicy | BestOfNPolicy:
        """The policy as the run acts (`chunk_policy`, best of N by the critic with
        `aloe.best_of_n`): what its training evaluated, `aloe eval` and the suite run."""
        clock = self.config.clock_limit()
        return acting_policy(self.chunk_policy(seed), self.critic, self.config, clock)


def load_run(root: str | Path, iteration: int | None = None, what: str = "run") -> Run:
    """Load a run directory written by `aloe train` (its latest readable checkpoint by
    default); a path that is not one raises a UsageError naming `what` (e.g. `--run`)."""
    return Run(Path(root), iteration, what)


RUN_HINT = "give a run directory written by `aloe train`"


def require_run_dir(root: Path, what: str = "run", hint: str = RUN_HINT) -> None:
    """Refuse, before any work, a path that is not a run directory with a checkpoint."""
    require(root.exists(), what, root, f"does not exist; {hint}")
    require(root.is_dir(), what, root, f"is a file; {hint}")
    require(
        (root / "config.json").is_file(),
        what,
        root,
        f"not a run directory (no config.json); {hint}",
    )
    require(
        bool(checkpoint.complete(root / "checkpoints")),
        what,
        root,
        "has no checkpoint yet: resume it with `aloe train --resume` until its first "
        "iteration ends",
    )


def read_run_config(root: Path) -> TrainConfig:
    """A run directory's config.json, checked as `aloe train` checks flags (a UsageError
    naming the file and field otherwise)."""
    cfg = TrainConfig.load(root)
    cfg.validate()
    return cfg


def _checkpoint(root: Path, iteration: int | None) -> checkpoint.Loaded:
    """The latest readable checkpoint (skipping damaged ones, see `checkpoint.load_latest`),
    or the one of `iteration`."""
    if iteration is None:
        loaded = checkpoint.load_latest(root)
        if loaded is None:  # gone since `require_run_dir` looked
            raise bad("checkpoints", root, "none left")
        return loaded
    found = dict(checkpoint.complete(root))
    require(
        iteration in found,
        "iteration",
        iteration,
        f"no checkpoint of it under {root}; there are {sorted(found)}",
    )
    return checkpoint.Loaded(iteration, found[iteration], checkpoint.load(found[iteration]))
