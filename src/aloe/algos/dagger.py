"""HG-DAgger (Appendix C-3): aggregate the operator's corrections and successful data, then
behaviour cloning (Eq. 16) on the aggregate. No value function.

Which rows enter the training set (`dagger_rows`), fragment by fragment:

- every `human` fragment: the operator's corrections are HG-DAgger's expert labels on the
  states the learner visits, whatever their outcome;
- a `demo` or `policy` fragment only when it ends in success: successful demonstrations
  (as the warm start uses) and the policy's own successful attempts. A policy fragment
  cut by a takeover is labelled a failure and never enters.

The store grows every iteration (D_i = D_{i−1} ∪ new data), so the aggregate does too, and
the actor is fine-tuned on it for `aloe.actor_steps` steps per iteration — the same number
of actor updates as ALOE and AWR, with the same optimiser.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from aloe import data as D

EPISODE = "episode_index"


def fragment_bounds(frames: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) positions of each fragment: maximal runs of one (episode, fragment)."""
    episode = np.asarray(frames[EPISODE])
    fragment = np.asarray(frames[D.FRAGMENT])
    cut = (episode[1:] != episode[:-1]) | (fragment[1:] != fragment[:-1])
    starts = np.concatenate([[0], np.flatnonzero(cut) + 1])
    ends = np.append(starts[1:], episode.size)
    return starts, ends


def dagger_rows(frames: Mapping[str, np.ndarray]) -> np.ndarray:
    """Bool mask (N,) of the rows in HG-DAgger's training set (see the module docstring)."""
    n = len(frames[D.ACTION])
    if n == 0:
        return np.zeros(0, dtype=bool)
    starts, ends = fragment_bounds(frames)
    source = np.asarray(frames[D.SOURCE]).astype(str)[starts]
    succeeded = np.asarray(frames[D.SUCCESS], dtype=bool)[ends - 1]
    keep = (source == "human") | succeeded
    return np.repeat(keep, ends - starts)
