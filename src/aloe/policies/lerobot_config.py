"""The options of `--actor-kind lerobot` (`--lerobot.*`), checked without loading anything:
`aloe.config` reads them on every run, so this module imports neither lerobot nor
transformers (the adapter is `aloe.policies.lerobot_actor`)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from aloe.errors import require
from aloe.extras import install_hint

POLICIES = ("smolvla", "pi0", "pi05")
AUTOCAST = ("none", "bf16")
LEROBOT_EXTRA = install_hint("lerobot")


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
