"""Frozen vision and language encoders, and the on-disk cache of their per-frame features.

Only torch and numpy are imported here; transformers and sentence-transformers (the
`vision` extra) are imported when a SigLIP or language model is first built.
"""

from aloe.vision.cache import FeatureCache, FrameFile
from aloe.vision.encoders import (
    IMAGE_ENCODERS,
    CnnEncoder,
    ImageEncoder,
    SiglipEncoder,
    TorchImageEncoder,
    build_image_encoder,
)
from aloe.vision.language import InstructionEncoder, available

__all__ = [
    "IMAGE_ENCODERS",
    "CnnEncoder",
    "FeatureCache",
    "FrameFile",
    "ImageEncoder",
    "InstructionEncoder",
    "SiglipEncoder",
    "TorchImageEncoder",
    "available",
    "build_image_encoder",
]
