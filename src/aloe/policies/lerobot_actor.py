"""A LeRobot VLA (SmolVLA, π0, π0.5) as aloe's `Actor`: `--actor-kind lerobot`.

The adapter calls the policy's own model (`policy.model.forward` / `sample_actions`), never
its processors, which fetch tokenizers from the hub; it does the processors' work itself:

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
  (`vision_tower`, `--vision.encoder lerobot`), as the paper's critic reads π0.5's SigLIP.

Time conventions: LeRobot interpolates x_t = t·ε + (1 − t)·a and integrates from t = 1
(noise) to 0; Eq. 15 here has ã = η·a + (1 − η)·ε from η = 0 (noise) to 1. So t = 1 − η,
the regression target ε − a is the same, and LeRobot's Euler steps are Eq. 15's. Noise ε
and t are drawn here from aloe's generator (t from the policy's own Beta(α, 1) by inverse
CDF), so a seeded run is reproducible.

LeRobot's per-sample loss averages over `max_action_dim` (SmolVLA) and ignores padded steps
(π0, π0.5); `flow_loss_per_sample` averages the squared error over the real action
dimensions and the valid steps only.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Generator, Tensor, nn

from aloe.data import image_key
from aloe.errors import bad, require
from aloe.extras import install_hint
from aloe.nn import Normalizer, evaluating
from aloe.policies.base import chunk_noise
from aloe.vision.encoders import TorchImageEncoder, hash_tensors, hf_config_fields

POLICIES = ("smolvla", "pi0", "pi05")
AUTOCAST = ("none", "bf16")
LEROBOT_EXTRA = install_hint("lerobot")
IMAGE_KEY = "observation.images.empty"  # a fresh policy's one (blank) slot in a state run
STATE = "observation.state"
ACTION = "action"
TOKENS = "observation.language.tokens"
TOKEN_MASK = "observation.language.attention_mask"
FROZEN_DIGEST = "frozen_sha256"  # stands in for a pretrained VLA's frozen weights


@dataclass
class LeRobotConfig:
    """The LeRobot policy of `--actor-kind lerobot` runs (nothing is ever downloaded)."""

    policy: str = "smolvla"
    """LeRobot policy: smolvla | pi0 | pi05 (pi0/pi05 need lerobot's own transformers)."""
    pretrained: str | None = None
    """Local LeRobot checkpoint directory (config.json + model.safetensors); none: a fresh
    SmolVLA on `vlm`."""
    vlm: str | None = None
    """Local SmolVLM directory (config, tokenizer, processor files): the backbone of a fresh
    SmolVLA (random weights), or where a pretrained SmolVLA finds its VLM offline."""
    num_flow_steps: int = 10
    """Euler steps from noise to action when sampling (LeRobot: 10)."""
    freeze_vision_encoder: bool = True
    """Keep the VLM's vision tower frozen."""
    train_expert_only: bool = True
    """Freeze the whole VLM backbone: train the action expert and projections only."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (π0/π0.5 only; SmolVLA has none in lerobot 0.4.4)."""
    autocast: str = "none"
    """Mixed precision of the policy's forward passes: none | bf16 (a GPU)."""

    def validate(self, prefix: str = "") -> None:
        """Raise UsageError naming the first bad field; nothing is loaded."""
        name = f"{prefix}lerobot."
        require(
            importlib.util.find_spec("lerobot") is not None,
            f"{prefix}actor_kind",
            "lerobot",
            f"needs the lerobot extra: {LEROBOT_EXTRA}",
        )
        require(
            self.policy in POLICIES,
            f"{name}policy",
            self.policy,
            f"must be one of {', '.join(POLICIES)}",
        )
        require(
            self.num_flow_steps >= 1, f"{name}num_flow_steps", self.num_flow_steps, "must be >= 1"
        )
        require(
            self.autocast in AUTOCAST,
            f"{name}autocast",
            self.autocast,
            f"must be one of {', '.join(AUTOCAST)}",
        )
        require(
            not (self.gradient_checkpointing and self.policy == "smolvla"),
            f"{name}gradient_checkpointing",
            True,
            "SmolVLA has no gradient checkpointing in lerobot 0.4.4; use pi0 or pi05",
        )
        hint = (
            "a local directory; aloe never downloads (get one with e.g. "
            "`hf download lerobot/smolvla_base --local-dir DIR`)"
        )
        if self.pretrained is None:
            require(
                self.policy == "smolvla",
                f"{name}pretrained",
                None,
                f"{self.policy} needs a pretrained checkpoint: {hint}",
            )
            require(
                self.vlm is not None,
                f"{name}vlm",
                None,
                f"a fresh SmolVLA needs a local SmolVLM directory (or give {name}pretrained)",
            )
        for field, path in (("pretrained", self.pretrained), ("vlm", self.vlm)):
            if path is not None:
                require(
                    (Path(path).expanduser() / "config.json").is_file(),
                    f"{name}{field}",
                    path,
                    f"has no config.json: {hint}",
                )


def _policy_class(policy: str) -> Any:
    from aloe.vision.encoders import offline

    offline()
    if policy == "smolvla":
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

        return SmolVLAPolicy
    if policy == "pi0":
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy

        return PI0Policy
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy

    return PI05Policy


def fresh_smolvla_config(
    vlm: str,
    state_dim: int,
    action_dim: int,
    horizon: int,
    image_size: int,
    cameras: Sequence[str] = (),
) -> Any:
    """A SmolVLA config on a local SmolVLM (random weights) sized for aloe's run: one image
    slot per camera (a blank one without cameras)."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    return SmolVLAConfig(
        vlm_model_name=vlm,
        load_vlm_weights=False,
        chunk_size=horizon,
        n_action_steps=horizon,
        max_state_dim=max(32, state_dim),
        max_action_dim=max(32, action_dim),
        resize_imgs_with_padding=(image_size, image_size),
        device="cpu",
        input_features={
            STATE: PolicyFeature(FeatureType.STATE, (state_dim,)),
            **dict.fromkeys(
                image_keys(cameras), PolicyFeature(FeatureType.VISUAL, (3, image_size, image_size))
            ),
        },
        output_features={ACTION: PolicyFeature(FeatureType.ACTION, (action_dim,))},
    )


def image_keys(cameras: Sequence[str]) -> list[str]:
    """A fresh policy's image slots: one per camera, or one blank slot in a state run."""
    return [image_key(c) for c in cameras] or [IMAGE_KEY]


def build_policy(
    cfg: LeRobotConfig, state_dim: int, action_dim: int, horizon: int, cameras: Sequence[str] = ()
) -> Any:
    """The LeRobot policy of `cfg`: a local checkpoint, or a fresh SmolVLA on `cfg.vlm` with a
    slot for each of `cameras`."""
    cls = _policy_class(cfg.policy)
    if cfg.pretrained is None:
        assert cfg.vlm is not None  # LeRobotConfig.validate
        size = _vlm_image_size(cfg.vlm)
        config = fresh_smolvla_config(cfg.vlm, state_dim, action_dim, horizon, size, cameras)
    else:
        config = pretrained_config(cfg)
    _set_training_options(config, cfg)
    _check_fits(config, cfg, state_dim, action_dim, horizon, len(cameras))
    with torch.random.fork_rng(devices=[]):  # init from the run's seed, caller's RNG untouched
        if cfg.pretrained is None:
            return cls(config)
        return cls.from_pretrained(cfg.pretrained, config=config, local_files_only=True)


def pretrained_config(cfg: LeRobotConfig) -> Any:
    """The config of the local checkpoint `cfg.pretrained`, on the CPU, its VLM at `cfg.vlm`
    where given (the actor's and the vision tower's loading share it)."""
    from lerobot.configs.policies import PreTrainedConfig

    config = PreTrainedConfig.from_pretrained(cfg.pretrained, local_files_only=True)
    config.device = "cpu"
    if cfg.vlm is not None:
        config.vlm_model_name = cfg.vlm
    return config


def _vlm_image_size(vlm: str) -> int:
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(vlm, local_files_only=True).vision_config.image_size)


def _set_training_options(config: Any, cfg: LeRobotConfig) -> None:
    config.num_steps = config.num_inference_steps = cfg.num_flow_steps
    config.freeze_vision_encoder = cfg.freeze_vision_encoder
    config.train_expert_only = cfg.train_expert_only
    if hasattr(config, "gradient_checkpointing"):
        config.gradient_checkpointing = cfg.gradient_checkpointing


def _check_fits(
    config: Any, cfg: LeRobotConfig, state_dim: int, action_dim: int, horizon: int, cameras: int = 0
) -> None:
    where = f"--lerobot.pretrained {cfg.pretrained}"
    slots = len(config.image_features)
    require(
        cameras <= slots,
        "--vision.cameras",
        cameras,
        f"names more cameras than the policy has image slots ({slots}: "
        f"{', '.join(config.image_features) or 'none'}, {where})",
    )
    require(
        horizon <= config.chunk_size,
        "horizon",
        horizon,
        f"must be <= the checkpoint's chunk_size ({config.chunk_size}, {where})",
    )
    require(
        action_dim <= config.max_action_dim,
        "action dim",
        action_dim,
        f"must be <= the checkpoint's max_action_dim ({config.max_action_dim})",
    )
    if cfg.policy != "pi05":  # π0.5 reads the state through its prompt, not a projection
        require(
            state_dim <= config.max_state_dim,
            "observation dim",
            state_dim,
            f"must be <= the checkpoint's max_state_dim ({config.max_state_dim})",
        )


def instruction_tokens(
    policy: Any, cfg: LeRobotConfig, instructions: Sequence[str]
) -> tuple[Tensor, Tensor]:
    """(tokens (T, L) int64, attention mask (T, L) bool) of each task's instruction, from the
    checkpoint's own tokenizer (SmolVLA: its VLM's; π0/π0.5: files in `pretrained`)."""
    tokenizer = _tokenizer(policy, cfg)
    texts = [t if t.endswith("\n") else t + "\n" for t in instructions]  # as LeRobot's processor
    out = tokenizer(
        texts,
        padding="longest",
        truncation=True,
        return_tensors="pt",
        max_length=policy.config.tokenizer_max_length,
    )
    return out["input_ids"].long(), out["attention_mask"].bool()


def _tokenizer(policy: Any, cfg: LeRobotConfig) -> Any:
    if cfg.policy == "smolvla":
        return policy.model.vlm_with_expert.processor.tokenizer
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(cfg.pretrained, local_files_only=True)
    except (OSError, ValueError):
        raise bad(
            "--lerobot.pretrained",
            cfg.pretrained,
            "has no tokenizer files; copy them in, e.g. `hf download "
            "google/paligemma-3b-pt-224 --include 'tokenizer*' --local-dir DIR`",
        ) from None


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
        tokens, mask = instruction_tokens(policy, cfg, instructions)
        self.tokens: Tensor
        self.token_mask: Tensor
        self.register_buffer("tokens", tokens)
        self.register_buffer("token_mask", mask)
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
        self, state: Tensor, task_index: Tensor, images: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The policy's batch keys for aloe's (observation vector, task row, cameras' pixels
        uint8 (B, V, H, W, 3) when the actor reads cameras)."""
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
            TOKENS: self.tokens[task_index],
            TOKEN_MASK: self.token_mask[task_index],
        }
        for i, key in enumerate(self.image_keys):
            if i < len(self.cameras) and images is not None:  # LeRobot's (B, 3, H, W) in [0, 1]
                batch[key] = images[:, i].to(dev).permute(0, 3, 1, 2).float() / 255.0
                batch[f"{key}_padding_mask"] = torch.ones(b, dtype=torch.bool, device=dev)
            else:  # no camera in this slot: blank, masked where the policy can mask it
                batch[key] = torch.zeros((b, *self.image_shape), device=dev)
                batch[f"{key}_padding_mask"] = torch.zeros(b, dtype=torch.bool, device=dev)
        return batch

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
    ) -> Tensor:
        """LeRobot's own (ε − a − v)² per element (B, chunk_size, max_action_dim), at its t."""
        args = self._model_args(self.lerobot_inputs(state, task_index, images))
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
    ) -> Tensor:
        """Eq. 15's per-sample loss (B,), the squared error averaged over the valid steps and
        the real action dimensions; draws ε (B, chunk, max_action_dim) then t (B,)."""
        full, mask = self.padded(actions, valid.float())
        noise = torch.randn(full.shape, generator=generator, device=full.device)
        time = self.lerobot_time(full.shape[0], generator)  # t = 1 − η of Eq. 15
        err = self.elementwise_loss(state, task_index, full, noise, time, images)[
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
        `num_steps` Euler steps (default: lerobot.num_flow_steps)."""
        b = state.shape[0]
        noise = chunk_noise(
            b, num_samples, (self.chunk_size, self.max_action_dim), generator, self.device
        )
        rows = (
            state.repeat_interleave(num_samples, 0),
            task_index.repeat_interleave(num_samples),
            None if images is None else images.repeat_interleave(num_samples, 0),
        )
        p: Any = self.policy
        with evaluating(self), self._autocast(), _euler_steps(p.model.config, num_steps):
            x = p.model.sample_actions(*self._model_args(self.lerobot_inputs(*rows)), noise=noise)
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


class LeRobotVisionTower(TorchImageEncoder):
    """`--vision.encoder lerobot`: the frozen vision tower (SigLIP) of a LeRobot VLA.

    Features are the tower's last hidden states averaged over patches, (N, vision hidden
    size), before the VLA's own projection into its language model. Preprocessing is
    SigLIP's (resize to the tower's image size, [-1, 1]), as the VLA's own for square
    cameras. The identity hashes the tower's config and weights, so the feature cache is
    rebuilt whenever another checkpoint is pointed at.
    """

    name = "lerobot"

    def __init__(
        self,
        policy: str,
        tower: nn.Module,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> None:
        self.policy_name = policy
        config: Any = tower.config  # transformers' SiglipVisionConfig (or SmolVLM's)
        self.hf_config = config
        super().__init__(
            tower.float(), int(config.hidden_size), int(config.image_size), device, batch_size
        )

    def _model_config(self) -> dict[str, Any]:
        return {"policy": self.policy_name, "tower": hf_config_fields(self.hf_config)}

    def _forward(self, pixels: Tensor) -> Tensor:
        return self.model(pixel_values=pixels).last_hidden_state.mean(1)


def policy_tower(policy: Any, name: str) -> nn.Module:
    """The vision tower inside a built LeRobot policy (SmolVLA's SmolVLM, π0's PaliGemma)."""
    if name == "smolvla":
        return policy.model.vlm_with_expert.get_vlm_model().vision_model
    return policy.model.paligemma_with_expert.paligemma.model.vision_tower


def vision_tower(cfg: LeRobotConfig, device: str | torch.device = "cpu") -> LeRobotVisionTower:
    """The tower of `cfg`'s VLA, loaded from disk (never downloaded).

    A pretrained checkpoint gives its own tower: the actor built from the same checkpoint
    holds the same weights. A fresh SmolVLA on `vlm` gives that SmolVLM's tower: its weights
    when the directory holds them, else a random tower fixed by seed 0 (the tiny test VLM).
    """
    if cfg.pretrained is not None:
        config = pretrained_config(cfg)
        cls = _policy_class(cfg.policy)
        with torch.random.fork_rng(devices=[]):
            policy = cls.from_pretrained(cfg.pretrained, config=config, local_files_only=True)
        return LeRobotVisionTower(cfg.policy, policy_tower(policy, cfg.policy), device)
    assert cfg.vlm is not None  # LeRobotConfig.validate
    from aloe.vision.encoders import offline

    offline()
    from transformers import AutoConfig, AutoModelForImageTextToText

    vlm = Path(cfg.vlm).expanduser()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if any(vlm.glob("*.safetensors")):
            model = AutoModelForImageTextToText.from_pretrained(
                vlm, local_files_only=True, dtype=torch.float32
            )
        else:
            model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(vlm))
    return LeRobotVisionTower(cfg.policy, model.model.vision_model, device)


TINY_WORDS = (
    "pick place the puck at goal reach push open close door drawer put a window "
    "button press peg insert side assembly into hole"
)


def write_tiny_smolvlm(root: Path, image_size: int = 32) -> Path:
    """Write a tiny random SmolVLM (config, word-level tokenizer, processor) to `root`, for
    tests and CPU smoke runs of a fresh SmolVLA (`--lerobot.vlm ROOT`); needs transformers."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        SmolVLMConfig,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    special = {
        "fake_image_token": "<fake_token_around_image>",
        "image_token": "<image>",
        "global_image_token": "<global-img>",
        "end_of_utterance_token": "<eou>",
    }
    words = ["<pad>", "<unk>", *special.values(), *TINY_WORDS.split()]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", extra_special_tokens=special
    )
    text = dict(
        model_type="llama",
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=8,
    )
    SmolVLMConfig(
        text_config=text, vision_config=vision, scale_factor=2, image_token_id=vocab["<image>"]
    ).save_pretrained(root)
    images = SmolVLMImageProcessor(
        do_resize=False, do_image_splitting=False, max_image_size={"longest_edge": image_size}
    )
    SmolVLMProcessor(
        image_processor=images,
        tokenizer=fast,
        image_seq_len=4,
        video_processor=SmolVLMVideoProcessor(),
    ).save_pretrained(root)
    return root
