"""Frozen image encoders: uint8 frames (N, H, W, 3) -> float32 features (N, F).

The critic reads these features directly; the actor puts a trainable adapter on top. Since
the encoders never train, each frame's features can be computed once and cached
(`aloe.vision.cache`), keyed by `identity`: a digest of everything that fixes the output
(class, config, preprocessing, and the bytes of every weight).

transformers is imported lazily, so `import aloe.vision` works without the `vision` extra;
only the SigLIP encoders need it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aloe.extras import install_hint

if TYPE_CHECKING:
    from transformers import SiglipVisionModel

VISION_EXTRA = install_hint("vision")

# Config keys that record where or with which library version a model was saved, not what
# it computes; dropped so a model and its save_pretrained -> from_pretrained copy agree.
_PROVENANCE_KEYS = {"transformers_version", "architectures", "dtype", "torch_dtype"}


def hash_tensors(h: Any, tensors: Iterable[tuple[str, Tensor]]) -> None:
    """Feed each (name, tensor) to hashlib object `h`: name, dtype, shape, then its bytes."""
    for key, t in tensors:
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)


def hf_config_fields(config: Any) -> dict[str, Any]:
    """A transformers config as it fixes a model's output: provenance and private keys out."""
    fields: dict[str, Any] = config.to_dict()
    return {k: v for k, v in fields.items() if not k.startswith("_") and k not in _PROVENANCE_KEYS}


def require(*modules: str) -> None:
    """Raise an ImportError naming the `vision` extra if any of `modules` is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"aloe.vision needs {', '.join(missing)}, which is not installed; "
            f"install the vision extra: {VISION_EXTRA}"
        )


def offline() -> None:
    """Keep the Hugging Face libraries off the network unless the user set HF_HUB_OFFLINE.

    Must run before the first import of huggingface_hub, which reads the variable once.
    Every load here also passes `local_files_only=True`, so nothing is ever downloaded.
    Their progress bars are off too (read at the same import): loading local weights takes
    a second, and a bar's carriage-return frames would fill a captured log.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # ... and where huggingface_hub was imported before (the variable is read then), or for
    # transformers' own "Loading weights" bar, switched off by their functions.
    if importlib.util.find_spec("huggingface_hub") is not None:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if importlib.util.find_spec("transformers") is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


@runtime_checkable
class ImageEncoder(Protocol):
    """What the feature cache and the agents need from a frozen image encoder."""

    feature_dim: int

    @property
    def name(self) -> str:
        """Short kind, as in `build_image_encoder` ("cnn", "siglip")."""
        ...

    @property
    def identity(self) -> str:
        """Hex digest that changes whenever `encode`'s output could change."""
        ...

    def config(self) -> dict[str, Any]:
        """JSON-able description of the encoder (saved beside cached features)."""
        ...

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, feature_dim)."""
        ...


class TorchImageEncoder:
    """A frozen torch module behind SigLIP-style preprocessing, evaluated in batches.

    Subclasses set `name`, build `self.model`, and implement `_forward` on preprocessed
    pixels (N, 3, S, S) in [-1, 1]. Preprocessing resizes to `image_size` (bilinear, with
    antialiasing, as PIL does when SigLIP's processor shrinks an image), scales to [0, 1]
    and normalises with mean 0.5 / std 0.5.
    """

    name: ClassVar[str]

    def __init__(
        self,
        model: nn.Module,
        feature_dim: int,
        image_size: int,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.requires_grad_(False).eval().to(self.device)
        self.feature_dim = feature_dim
        self.image_size = image_size
        self.batch_size = batch_size

    def _forward(self, pixels: Tensor) -> Tensor:
        raise NotImplementedError

    def _model_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def preprocessing(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "resize": "bilinear",
            "antialias": True,
            "rescale": 1 / 255,
            "mean": 0.5,
            "std": 0.5,
        }

    def config(self) -> dict[str, Any]:
        return {
            "class": type(self).__qualname__,
            "model": self._model_config(),
            "preprocessing": self.preprocessing(),
            "feature_dim": self.feature_dim,
        }

    @property
    def identity(self) -> str:
        """sha256 of `config()` and every parameter and buffer (name, dtype, shape, bytes).

        Recomputed on each access (one pass over the weights, well under a second for a
        SigLIP base), so an edited weight is never missed. Device and batch size are left
        out: they change the output only at float-rounding level.
        """
        h = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode())
        hash_tensors(h, itertools.chain(self.model.named_parameters(), self.model.named_buffers()))
        return h.hexdigest()

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, S, S) normalised to [-1, 1]."""
        x = images.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x - 0.5) / 0.5

    @torch.no_grad()
    def encode_tensor(self, images: Tensor) -> Tensor:
        """uint8 tensor (N, H, W, 3), on any device -> float32 (N, F) on `self.device`.

        One forward pass, no batching: for the actor, whose batches are already sized.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 images (N, H, W, 3), got {images.dtype} {tuple(images.shape)}"
            )
        pixels = self.preprocess(images.to(self.device))
        return self._forward(pixels).float()

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, F), in batches of `batch_size`."""
        _check_images(images)
        out = np.empty((len(images), self.feature_dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = np.ascontiguousarray(images[start : start + self.batch_size])
            if not chunk.flags.writeable:  # torch.from_numpy warns on read-only memory
                chunk = chunk.copy()
            out[start : start + len(chunk)] = self.encode_tensor(torch.from_numpy(chunk)).cpu()
        return out


def _check_images(images: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 images (N, H, W, 3), got {images.dtype} {tuple(images.shape)}"
        )


class CnnEncoder(TorchImageEncoder):
    """A small randomly initialised, frozen conv net: the cheap CPU option.

    Stride-2 3x3 convs with ReLU, global average pooling, then a linear map to
    `feature_dim`. He-normal init (zero bias) keeps activations at unit scale through the
    stack, so the random features stay informative rather than shrinking layer by layer.
    """

    name = "cnn"

    def __init__(
        self,
        seed: int = 0,
        channels: Sequence[int] = (16, 32, 64),
        feature_dim: int = 64,
        image_size: int = 64,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
    ) -> None:
        self.seed = seed
        self.channels = tuple(channels)
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in self.channels:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, feature_dim)]
        model = nn.Sequential(*layers)
        generator = torch.Generator().manual_seed(seed)
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                gain: Literal["relu", "linear"] = "relu" if isinstance(m, nn.Conv2d) else "linear"
                nn.init.kaiming_normal_(m.weight, nonlinearity=gain, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        super().__init__(model, feature_dim, image_size, device, batch_size)

    def _model_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "channels": list(self.channels)}

    def _forward(self, pixels: Tensor) -> Tensor:
        return self.model(pixels)


class SiglipEncoder(TorchImageEncoder):
    """SigLIP's vision tower (transformers' `SiglipVisionModel`); features = pooler_output.

    Weights are kept in float32. Build with `from_pretrained` (local only, never
    downloads) or `tiny` (random, for tests and CPU smoke runs).
    """

    name = "siglip"

    def __init__(
        self,
        model: SiglipVisionModel,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> None:
        cfg = model.config
        if not getattr(cfg, "vision_use_head", True):
            raise ValueError("SiglipEncoder needs the attention-pooling head (vision_use_head)")
        size = cfg.image_size
        if not isinstance(size, int):  # (H, W): the processor resizes to a square only
            if len(size) != 2 or size[0] != size[1]:
                raise ValueError(f"SiglipEncoder needs a square image_size, got {size}")
            size = int(size[0])
        self.hf_config = cfg
        super().__init__(model, int(cfg.hidden_size), size, device, batch_size)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], device: str | torch.device = "cpu", batch_size: int = 64
    ) -> SiglipEncoder:
        """Load from a local directory, or a repo id already in the Hugging Face cache.

        Accepts a SigLIP vision checkpoint or a full SigLIP (vision + text) one; the text
        tower is ignored. Never downloads: a model that is not on disk raises
        FileNotFoundError saying how to get it.
        """
        require("transformers")
        offline()
        from transformers import SiglipVisionModel  # optional extra: vision

        local = Path(path).expanduser()
        if local.exists() and not local.is_dir():
            raise FileNotFoundError(f"SigLIP path {local} is a file; pass the model directory")
        source = str(local) if local.is_dir() else str(path)
        try:
            model = SiglipVisionModel.from_pretrained(
                source, local_files_only=True, dtype=torch.float32
            )
        except (OSError, ValueError) as e:
            raise FileNotFoundError(
                f"no SigLIP model at {str(path)!r}: not a local directory and not in the "
                "Hugging Face cache (aloe never downloads weights). Pass the path of a local "
                "copy, or pre-download it on a machine with network access, e.g. "
                "`hf download google/siglip-base-patch16-224 --local-dir <dir>`."
            ) from e
        return cls(model, device, batch_size)

    @classmethod
    def tiny(
        cls,
        seed: int = 0,
        image_size: int = 32,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> SiglipEncoder:
        """A randomly initialised 2-layer SigLIP (hidden 32, patch 8), the same for a seed."""
        require("transformers")
        offline()
        from transformers import SiglipVisionConfig, SiglipVisionModel  # optional extra: vision

        config = SiglipVisionConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=8,
            image_size=image_size,
        )
        with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
            torch.manual_seed(seed)
            model = SiglipVisionModel(config)
        return cls(model, device, batch_size)

    def _model_config(self) -> dict[str, Any]:
        return hf_config_fields(self.hf_config)

    def _forward(self, pixels: Tensor) -> Tensor:
        return self.model(pixel_values=pixels).pooler_output


IMAGE_ENCODERS = ("cnn", "siglip-tiny", "siglip", "lerobot")


def build_image_encoder(
    name: str,
    path: str | None = None,
    device: str | torch.device = "cpu",
    image_size: int = 64,
) -> ImageEncoder:
    """An encoder by name: "cnn", "siglip-tiny" (random, `image_size`), "siglip" (`path`);
    "lerobot" is built by `aloe.policies.lerobot_vision.vision_tower`.

    A pretrained SigLIP keeps the image size it was trained at; `image_size` is ignored.
    """
    if name == "cnn":
        return CnnEncoder(image_size=image_size, device=device)
    if name == "siglip-tiny":
        return SiglipEncoder.tiny(image_size=image_size, device=device)
    if name == "siglip":
        if path is None:
            raise ValueError(
                "encoder 'siglip' needs path= a local SigLIP directory or a cached repo id "
                "(e.g. google/siglip-base-patch16-224)"
            )
        return SiglipEncoder.from_pretrained(path, device=device)
    if name == "lerobot":
        raise ValueError(
            "encoder 'lerobot' is a VLA's tower: build it from the run's LeRobot "
            "config with aloe.policies.lerobot_vision.vision_tower"
        )
    raise ValueError(f"unknown image encoder {name!r}; choose from {', '.join(IMAGE_ENCODERS)}")
