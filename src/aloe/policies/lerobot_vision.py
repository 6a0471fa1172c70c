"""`--vision.encoder lerobot`: the critic reads the cameras through the run's VLA's own
frozen vision tower, as the paper's critic reads π0.5's SigLIP. Loaded from disk, never
downloaded; transformers is imported where a tower is built (the lerobot extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aloe.policies.lerobot_config import LeRobotConfig
from aloe.policies.lerobot_policy import policy_class, pretrained_config
from aloe.vision.encoders import TorchImageEncoder, hf_config_fields, offline


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
        cls = policy_class(cfg.policy)
        with torch.random.fork_rng(devices=[]):
            policy = cls.from_pretrained(cfg.pretrained, config=config, local_files_only=True)
        return LeRobotVisionTower(cfg.policy, policy_tower(policy, cfg.policy), device)
    assert cfg.vlm is not None  # LeRobotConfig.validate
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
