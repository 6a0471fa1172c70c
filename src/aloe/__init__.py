"""aloe: action-level off-policy evaluation for post-training flow-matching VLA policies."""

__version__ = "0.1.0"
