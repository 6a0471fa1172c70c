"""A LeRobot VLA (SmolVLA, π0, π0.5) as aloe's `Actor`: `--actor-kind lerobot`.

The adapter calls the policy's own model (`policy.model.forward` / `sample_actions`), never
its processors, which fetch tokenizers from the hub; it does the processors' work itself
(the policy and its tokenizer are loaded by `aloe.policies.lerobot_policy`):

- state: aloe's observation vector, normalised with the episode store's statistics, padded
  by LeRobot to `max_state_dim`; actions normalised (identity by default, MetaWorld's
  actions are already in [-1, 1]) and padded to `max_action_dim`, the chunk to `chunk_size`;
- instruction: each task's text tokenised once with the checkpoint's own tokenizer files,
  kept as buffers, and picked per row by `task_index`;
- cameras: in an `obs image` run the VLA reads the cameras' pixels (`images`, uint8 (B, V,
  H, W, 3): `ChunkBatch.images` in training, the live observation's in rollouts), camera i
  in the policy's i-th image slot as (B, 3, H, W) in [0, 1], which the policy resizes and
  rescales itself. A fresh SmolVLA gets one slot per camera (`observation.images.<camera>`);
  a checkpoint's slots take the run's cameras in order (`--vision.cameras` may not name more
  cameras than it has slots). Slots without a camera, and all of them in a state run, get a
  blank image, masked out where the policy takes a padding mask (SmolVLA). Only the leading
  robot-state part of aloe's observation vector reaches the VLA: the image features after it
  are the critic's, which reads the cameras through the VLA's own frozen vision tower
  (`aloe.policies.lerobot_vision`, `--vision.encoder lerobot`), as the paper's critic reads
  π0.5's SigLIP.

Time conventions: LeRobot interpolates x_t = t·ε + (1 − t)·a and integrates from t = 1
(noise) to 0; Eq. 15 here has ã = η·a + (1 − η)·ε from η = 0 (noise) to 1. So t = 1 − η,
the regression target ε − a is the same, and LeRobot's Euler steps are Eq. 15's. Noise ε
and t are drawn here from aloe's generator (t from the policy's own Beta(α, 1) by inverse
CDF), so a seeded run is reproducible.

LeRobot's per-sample loss averages over `max_action_dim` (SmolVLA) and ignores padded steps
(π0, π0.5); `flow_loss_per_sample` averages the squared error over the real action
dimensions and the valid steps only.

Advantage conditioning (RECAP, `use_indicator`): the improvement indicator is text after the
task's prompt ("…\nAdvantage: positive", nothing when dropped; `aloe.policies.indicator`),
each task's three prompts tokenised once, so the VLA itself is unchanged. Classifier-free
guidance (β ≠ 1) samples the conditional and the unconditional prompt as one batch of 2B
rows from the same noise and, at each of LeRobot's Euler steps, moves both by the guided
velocity (`_guided_steps` wraps the model's `denoise_step`, which SmolVLA, π0 and π0.5 call
once per step).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Generator, Tensor, nn

from aloe.errors import bad
from aloe.nn import Normalizer, evaluating
from aloe.policies.base import chunk_noise
from aloe.policies.indicator import DROPPED, NUM_INDICATORS, Guidance, guided_velocity, prompt
from aloe.policies.lerobot_config import LeRobotConfig
from aloe.policies.lerobot_policy import (
    IMAGE_KEY,
    STATE,
    TOKEN_MASK,
    TOKENS,
    build_policy,
    instruction_tokens,
)
from aloe.vision.encoders import hash_tensors

FROZEN_DIGEST = "frozen_sha256"  # stands in for a pretrained VLA's frozen weights


class LeRobotActor(nn.Module):
    """aloe's `Actor` over a LeRobot policy (module `policy`); see the module docstring."""

    def __init__(
        self,
        cfg: LeRobotConfig,
        policy: nn.Module,
        instructions: Sequence[str],
        *,
        state_dim: int,
        action_dim: int,
        horizon: int,
        state_normalizer: Normalizer | None = None,
        action_normalizer: Normalizer | None = None,
        robot_state_dim: int | None = None,
        cameras: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.cameras = tuple(cameras)  # their pixels fill the policy's first image slots
        self.cfg = cfg
        self.policy = policy
        self.horizon = horizon
        self.action_dim = action_dim
        self.state_dim = state_dim
        # the VLA's state input: the observation's leading robot-state part (in an image run
        # the camera features that follow it are the critic's, see the module docstring)
        self.robot_state_dim = state_dim if robot_state_dim is None else robot_state_dim
        self.state_norm = state_normalizer or Normalizer(state_dim)
        self.action_norm = action_normalizer or Normalizer(action_dim)
        self.instructions = tuple(instructions)
        tokens, mask = instruction_tokens(policy, cfg, instructions)
        self.tokens: Tensor
        self.token_mask: Tensor
        self.register_buffer("tokens", tokens)
        self.register_buffer("token_mask", mask)
        # (3, T, L) each task's prompt per indicator (`use_indicator`); None: not conditioned
        self.prompt_tokens: Tensor | None
        self.prompt_mask: Tensor | None
        self.register_buffer("prompt_tokens", None)
        self.register_buffer("prompt_mask", None)
        self.guidance: Guidance | None = None
        self._frozen_digest: str | None = None
        lr_cfg: Any = policy.config
        self.chunk_size, self.max_action_dim = int(lr_cfg.chunk_size), int(lr_cfg.max_action_dim)
        self.image_keys = list(lr_cfg.image_features) or [IMAGE_KEY]
        self.image_shape = (
            tuple(next(iter(lr_cfg.image_features.values())).shape)
            if lr_cfg.image_features
            else (3, 32, 32)
        )
        beta = getattr(lr_cfg, "time_sampling_beta_beta", 1.0)
        if beta != 1.0:
            raise NotImplementedError(f"time sampling Beta(α, {beta}): only β = 1 is drawn here")
        self.time_alpha = float(getattr(lr_cfg, "time_sampling_beta_alpha", 1.5))
        self.time_scale = float(getattr(lr_cfg, "time_sampling_scale", 0.999))
        self.time_offset = float(getattr(lr_cfg, "time_sampling_offset", 0.001))

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def use_indicator(self, guidance: Guidance) -> None:
        """Condition on the improvement indicator from now on, acting on `guidance`: each
        task's prompt tokenised with each indicator's text (`indicator.prompt`)."""
        if self.prompt_tokens is None:
            texts = [prompt(t, i) for i in range(NUM_INDICATORS) for t in self.instructions]
            tokens, mask = instruction_tokens(self.policy, self.cfg, texts)
            shape = (NUM_INDICATORS, len(self.instructions), -1)
            self.prompt_tokens = tokens.view(shape).to(self.device)
            self.prompt_mask = mask.view(shape).to(self.device)
        self.guidance = guidance

    def frozen_keys(self) -> list[str]:
        """state_dict keys of the frozen parameters (the VLM or its vision tower)."""
        return [name for name, p in self.named_parameters() if not p.requires_grad]

    def frozen_digest(self) -> str:
        """sha256 of the frozen parameters (names, dtypes, shapes, bytes); computed once,
        since they never train."""
        if self._frozen_digest is None:
            h = hashlib.sha256()
            hash_tensors(h, ((k, p) for k, p in self.named_parameters() if not p.requires_grad))
            self._frozen_digest = h.hexdigest()
        return self._frozen_digest

    def checkpoint_state(self) -> dict[str, Any]:
        """What a run's checkpoints keep: the state_dict without the frozen parameters when
        they come from `lerobot.pretrained` (on disk already, read again when the run is
        built), their digest in their place; a fresh VLA's random weights are all kept."""
        state: dict[str, Any] = dict(self.state_dict())
        if self.cfg.pretrained is None:
            return state
        for key in self.frozen_keys():
            del state[key]
        state[FROZEN_DIGEST] = self.frozen_digest()
        return state

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Read `checkpoint_state`'s output back; frozen weights left out must be the ones
        this actor was built with, else UsageError names both digests."""
        state = dict(state)
        digest = state.pop(FROZEN_DIGEST, None)
        if digest is None:  # everything was saved
            self.load_state_dict(state)
            return
        if digest != self.frozen_digest():
            raise bad(
                "--lerobot.pretrained",
                self.cfg.pretrained,
                f"its frozen weights (sha256 {self.frozen_digest()[:12]}…) are not the "
                f"ones the checkpoint was trained on ({str(digest)[:12]}…): point it "
                "at the run's own pretrained checkpoint",
            )
        missing, unexpected = self.load_state_dict(state, strict=False)
        if sorted(missing) != sorted(self.frozen_keys()) or unexpected:
            raise ValueError(
                f"checkpoint does not match the actor: missing {missing[:3]}…, "
                f"unexpected {unexpected[:3]}"
            )

    def lerobot_inputs(
        self,
        state: Tensor,
        task_index: Tensor,
        images: Tensor | None = None,
        indicator: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The policy's batch keys for aloe's (observation vector, task row, cameras' pixels
        uint8 (B, V, H, W, 3) when the actor reads cameras, and with `use_indicator` each
        row's improvement indicator (B,), None: dropped)."""
        b = state.shape[0]
        dev = state.device
        if self.cameras and (images is None or images.shape[:2] != (b, len(self.cameras))):
            got = None if images is None else tuple(images.shape)
            raise ValueError(
                f"this VLA reads cameras {self.cameras}: images must be uint8 "
                f"(B={b}, V={len(self.cameras)}, H, W, 3), got {got}"
            )
        batch = {
            STATE: self.state_norm.normalize(state)[:, : self.robot_state_dim],
            **self._prompt(task_index, indicator),
        }
        for i, key in enumerate(self.image_keys):
            if i < len(self.cameras) and images is not None:  # LeRobot's (B, 3, H, W) in [0, 1]
                batch[key] = images[:, i].to(dev).permute(0, 3, 1, 2).float() / 255.0
                batch[f"{key}_padding_mask"] = torch.ones(b, dtype=torch.bool, device=dev)
            else:  # no camera in this slot: blank, masked where the policy can mask it
                batch[key] = torch.zeros((b, *self.image_shape), device=dev)
                batch[f"{key}_padding_mask"] = torch.zeros(b, dtype=torch.bool, device=dev)
        return batch

    def _prompt(self, task_index: Tensor, indicator: Tensor | None) -> dict[str, Tensor]:
        """The language keys: each row's task prompt, with its indicator's text where the
        actor is conditioned on one."""
        if self.prompt_tokens is None or self.prompt_mask is None:
            if indicator is not None:
                raise ValueError("this actor is not conditioned on an indicator (use_indicator)")
            return {TOKENS: self.tokens[task_index], TOKEN_MASK: self.token_mask[task_index]}
        rows = torch.full_like(task_index, DROPPED) if indicator is None else indicator
        return {
            TOKENS: self.prompt_tokens[rows, task_index],
            TOKEN_MASK: self.prompt_mask[rows, task_index],
        }

    def _model_args(self, batch: dict[str, Tensor]) -> list[Any]:
        p: Any = self.policy
        prep = p.prepare_images if self.cfg.policy == "smolvla" else p._preprocess_images
        images, masks = prep(batch)
        args = [images, masks, batch[TOKENS], batch[TOKEN_MASK]]
        return args if self.cfg.policy == "pi05" else [*args, p.prepare_state(batch)]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cfg.autocast == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def lerobot_time(self, b: int, generator: Generator | None) -> Tensor:
        """LeRobot's flow time t ~ Beta(α, 1)·scale + offset, by inverse CDF from `generator`."""
        u = torch.rand(b, generator=generator, device=self.device)
        return u.pow(1.0 / self.time_alpha) * self.time_scale + self.time_offset

    def padded(self, actions: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised actions padded to (B, chunk_size, max_action_dim), valid to chunk_size."""
        a = self.action_norm.normalize(actions)
        b, h, d = a.shape
        full = a.new_zeros((b, self.chunk_size, self.max_action_dim))
        full[:, :h, :d] = a
        mask = valid.new_zeros((b, self.chunk_size))
        mask[:, :h] = valid
        return full, mask

    def elementwise_loss(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor,
        noise: Tensor,
        time: Tensor,
        images: Tensor | None = None,
        indicator: Tensor | None = None,
    ) -> Tensor:
        """LeRobot's own (ε − a − v)² per element (B, chunk_size, max_action_dim), at its t."""
        args = self._model_args(self.lerobot_inputs(state, task_index, images, indicator))
        p: Any = self.policy
        with self._autocast():
            return p.model.forward(*args, actions, noise, time).float()

    def flow_loss_per_sample(
        self,
        state: Tensor,
        task_index: Tensor,
        actions: Tensor,
        valid: Tensor,
        generator: Generator | None = None,
        images: Tensor | None = None,
        indicator: Tensor | None = None,
    ) -> Tensor:
        """Eq. 15's per-sample loss (B,), the squared error averaged over the valid steps and
        the real action dimensions; draws ε (B, chunk, max_action_dim) then t (B,).
        `indicator` (B,): each row's improvement indicator (`use_indicator`; None: none)."""
        full, mask = self.padded(actions, valid.float())
        noise = torch.randn(full.shape, generator=generator, device=full.device)
        time = self.lerobot_time(full.shape[0], generator)  # t = 1 − η of Eq. 15
        err = self.elementwise_loss(state, task_index, full, noise, time, images, indicator)[
            ..., : self.action_dim
        ]
        per_step = err.mean(-1)  # the real action dimensions only
        return (per_step * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)

    @torch.no_grad()
    def sample(
        self,
        state: Tensor,
        task_index: Tensor,
        num_samples: int = 1,
        generator: Generator | Sequence[Generator] | None = None,
        num_steps: int | None = None,
        images: Tensor | None = None,
    ) -> Tensor:
        """Chunks (B, num_samples, h, A), clipped to [-1, 1]; LeRobot integrates t = 1 -> 0
        from noise ε drawn here (row i's from generator i when one is given per row), in
        `num_steps` Euler steps (default: lerobot.num_flow_steps). An advantage-conditioned
        actor samples under its `guidance` (module docstring)."""
        b = state.shape[0]
        noise = chunk_noise(
            b, num_samples, (self.chunk_size, self.max_action_dim), generator, self.device
        )
        states = state.repeat_interleave(num_samples, 0)
        tasks = task_index.repeat_interleave(num_samples)
        pixels = None if images is None else images.repeat_interleave(num_samples, 0)
        indicator, beta = None, None
        if self.guidance is not None:
            indicator = torch.full_like(tasks, self.guidance.indicator)
            if self.guidance.guided:  # the unconditional prompt's rows after them, same noise
                states, tasks, noise = (torch.cat([t, t]) for t in (states, tasks, noise))
                pixels = None if pixels is None else torch.cat([pixels, pixels])
                indicator = torch.cat([indicator, torch.full_like(indicator, DROPPED)])
                beta = self.guidance.beta
        p: Any = self.policy
        with evaluating(self), self._autocast(), _euler_steps(p.model.config, num_steps):
            inputs = self.lerobot_inputs(states, tasks, pixels, indicator)
            with _guided_steps(p.model, beta):
                x = p.model.sample_actions(*self._model_args(inputs), noise=noise)
        x = x[: b * num_samples]  # with guidance both halves are the same chunks
        a = self.action_norm.unnormalize(x.float()[:, : self.horizon, : self.action_dim])
        return a.clamp(-1.0, 1.0).view(b, num_samples, self.horizon, self.action_dim)


@contextlib.contextmanager
def _euler_steps(config: Any, num_steps: int | None) -> Iterator[None]:
    """LeRobot's sample_actions reads its Euler steps from its config (SmolVLA's num_steps,
    π0's and π0.5's num_inference_steps): set them for the block (None: leave them), then
    restore them."""
    names = [n for n in ("num_steps", "num_inference_steps") if hasattr(config, n)]
    saved = {n: getattr(config, n) for n in names}
    try:
        for n in names if num_steps is not None else ():
            setattr(config, n, num_steps)
        yield
    finally:
        for n, value in saved.items():
            setattr(config, n, value)


@contextlib.contextmanager
def _guided_steps(model: Any, beta: float | None) -> Iterator[None]:
    """With `beta`, the model's `denoise_step` for the block returns, for a batch of
    conditional rows then their unconditional twins, the classifier-free guided velocity in
    both halves, so that each pair moves together (None: leave it)."""
    if beta is None:
        yield
        return
    step = model.denoise_step

    def guided(*args: Any, **kwargs: Any) -> Tensor:
        cond, free = step(*args, **kwargs).chunk(2)
        v = guided_velocity(cond, free, beta)  # CFG, at every flow step
        return torch.cat([v, v])

    model.denoise_step = guided
    try:
        yield
    finally:
        del model.denoise_step


def build_actor(
    cfg: LeRobotConfig,
    instructions: Sequence[str],
    *,
    state_dim: int,
    action_dim: int,
    horizon: int,
    state_normalizer: Normalizer | None = None,
    robot_state_dim: int | None = None,
    cameras: Sequence[str] = (),
) -> LeRobotActor:
    """The adapter around `build_policy(cfg, ...)` (`aloe.run.build_learner` calls it); the
    VLA reads the first `robot_state_dim` entries of the observation (default: all) and the
    pixels of `cameras`."""
    robot = state_dim if robot_state_dim is None else robot_state_dim
    policy = build_policy(cfg, robot, action_dim, horizon, cameras)
    return LeRobotActor(
        cfg,
        policy,
        instructions,
        state_dim=state_dim,
        action_dim=action_dim,
        horizon=horizon,
        state_normalizer=state_normalizer,
        robot_state_dim=robot,
        cameras=cameras,
    )
