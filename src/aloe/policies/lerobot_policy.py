"""The LeRobot policy behind the adapter (`aloe.policies.lerobot_actor`), from local files
only: its class, a fresh SmolVLA's config or a checkpoint's, the run's options set on it,
the checks that the run fits it, and each task's instruction tokens from its own tokenizer.

lerobot and transformers are imported inside the functions that need them: the lerobot
extra is optional, and a run without it never loads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from aloe.data import image_key
from aloe.errors import bad, require
from aloe.policies.lerobot_config import LeRobotConfig
from aloe.vision.encoders import offline

# LeRobot's batch keys
IMAGE_KEY = "observation.images.empty"  # a fresh policy's one (blank) slot in a state run
STATE = "observation.state"
ACTION = "action"
TOKENS = "observation.language.tokens"
TOKEN_MASK = "observation.language.attention_mask"


def policy_class(policy: str) -> Any:
    """LeRobot's class for `policy` (smolvla | pi0 | pi05), imported with the hub offline."""
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
    cls = policy_class(cfg.policy)
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
