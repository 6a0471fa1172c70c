"""aloe: action-level off-policy evaluation for post-training flow-matching VLA policies."""

__version__ = "0.1.0"

from aloe.run import Run, load_run

__all__ = ["Run", "load_run", "__version__"]
