"""aloe: action-level off-policy evaluation for post-training flow-matching VLA policies."""

import importlib.util
import os
import sys

__version__ = "0.1.0"


def _torchvision_before_osmesa() -> None:
    """PyPI's torchvision segfaults when it is imported after MuJoCo has loaded OSMesa, and
    loads fine before it (LeRobot imports torchvision): where the two can meet, import it
    first. Elsewhere nothing is imported."""
    if "mujoco" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return
    if os.environ.get("MUJOCO_GL", "" if os.environ.get("DISPLAY") else "osmesa") == "osmesa":
        import torchvision  # noqa: F401


_torchvision_before_osmesa()

import aloe.operators.composed  # noqa: E402, F401  (fill aloe.envs.base.LENT for the rows)
import aloe.operators.scripted  # noqa: E402, F401
import aloe.rollout  # noqa: E402, F401
from aloe.api import evaluate_run, run_training  # noqa: E402
from aloe.run import Run, load_run  # noqa: E402

__all__ = ["Run", "evaluate_run", "load_run", "run_training", "__version__"]
