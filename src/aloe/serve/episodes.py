"""An episode recorded over the connection, as in-process collection records it.

The robot reports what happened (`aloe.serve.protocol`: step, label, intervention start and
end); each report becomes the `aloe.rollout.Step` or `relabel_end` call that the rollout
engine would have made, on the same `EpisodeRecorder`, so the episode has the same columns,
fragments, Eq. 14 labels and `is_intervention` as a simulated operator's. The server owns
the labels' values: Eq. 14's reward from the outcome and the run's C_fail, the fragment
index from the interventions, the policy version from the episode's start.

A report that breaks `aloe.serve.rules` (a step after an outcome, a state out of bounds, more
memory than the connection may hold) raises `EpisodeRefused`, and the server discards the
episode whole. The memory an open episode holds is counted from its arrays' bytes plus
`STEP_OVERHEAD` per step (the Python objects that hold them).

A connection that closes mid-episode loses that episode: nothing of it is written. (Stored
truncated, its last step would need an outcome nobody reported; bootstrapping from a state
whose fate is unknown would be a guess.) What `episode_end` commits is crash-safe as every
store append is.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from aloe import data as D
from aloe.rollout import EpisodeRecorder, Step
from aloe.serve.protocol import StepReport, refuse
from aloe.serve.rules import Bounds, EpisodeRefused

MAX_STEPS = 100_000  # per episode, whatever its frames weigh
STEP_OVERHEAD = 1024  # bytes of Python objects (lists, array headers) per recorded step


def eq14_reward(*, success: bool, failed: bool, c_fail: float) -> float:
    """Eq. 14: 0 at a successful end, −C_fail at a failed end, −1 otherwise (as `TaskEnv`)."""
    if success:
        return 0.0
    if failed:
        return -float(c_fail)
    return -1.0


class RemoteEpisode:
    """One episode's reports, checked for order, turned into the recorder's calls."""

    def __init__(
        self,
        *,
        task: str,
        instruction: str,
        seed: int | None,
        version: int,
        c_fail: float,
        record_sim_state: bool,
        bounds: Bounds | None = None,
        max_bytes: int = 2**62,
    ) -> None:
        self.task = task
        self.instruction = instruction
        self.seed = seed
        self.version = version
        self.c_fail = c_fail
        self.bounds = bounds
        self.max_bytes = max_bytes
        self.bytes = 0
        self.recorder = EpisodeRecorder(record_sim_state)
        self.fragment = 0
        self.takeovers = 0
        self.control: str | None = None  # who acts now: policy, human (in an intervention), demo
        self.last_source: str | None = None
        self.ended: str | None = None  # the outcome that ended the current fragment, if any

    def __len__(self) -> int:
        return len(self.recorder.cols[D.ACTION])

    def step(self, r: StepReport) -> None:
        if len(self) >= MAX_STEPS:
            raise refuse(f"an episode holds at most {MAX_STEPS} steps; end it")
        self._check_open()
        self._check_source(r.source)
        if self.bounds is not None:
            for key, x in ((D.STATE, r.obs["state"]), (D.NEXT_STATE, r.next_state)):
                self.bounds.check(key, x)
            self.bounds.check(D.ACTION, r.action)
        self._count_bytes(r)
        failed = r.outcome == "failure"
        self.recorder.add(
            Step(
                obs=r.obs,
                action=r.action,
                next_obs={"state": r.next_state},
                reward=eq14_reward(
                    success=r.outcome == "success", failed=failed, c_fail=self.c_fail
                ),
                terminated=r.outcome in ("success", "failure"),
                truncated=r.outcome == "truncated",
                info={"success": r.outcome == "success", "failure_reason": r.reason},
                source=r.source,
                version=self.version if r.source == "policy" else -1,
                fragment=self.fragment,
                chunk_start=False,
                sim_state=r.sim_state,
            )
        )
        self.last_source = r.source
        self.ended = r.outcome or None

    def _check_open(self) -> None:
        """No step after an outcome: a new fragment starts only at a takeover or handback."""
        if self.ended == "success":
            raise EpisodeRefused(f"step {len(self)}: the episode succeeded at step {len(self) - 1}")
        if self.ended is not None:
            raise EpisodeRefused(
                f"step {len(self)}: fragment {self.fragment} ended with {self.ended} at step "
                f"{len(self) - 1}; only intervention_start or intervention_end starts another"
            )

    def _count_bytes(self, r: StepReport) -> None:
        arrays = [r.obs["state"], r.action, r.next_state, *r.obs.get("images", {}).values()]
        if r.sim_state is not None:
            arrays.append(r.sim_state)
        frame = STEP_OVERHEAD + sum(int(np.asarray(x).nbytes) for x in arrays)
        if self.bytes + frame > self.max_bytes:
            raise EpisodeRefused(
                f"step {len(self)}: the open episode would hold {(self.bytes + frame) / 2**20:.3g}"
                f" MiB ({len(self) + 1} steps of {frame} bytes), more than a connection may "
                f"({self.max_bytes / 2**20:.3g} MiB, aloe serve --max-episode-mb)"
            )
        self.bytes += frame

    def _check_source(self, source: str) -> None:
        if self.control is None:  # the first step says whether this is a demonstration
            self.control = "demo" if source == "demo" else "policy"
        if source != self.control:
            hint = {
                "human": "send intervention_start first",
                "policy": "send intervention_end first",
                "demo": "a demonstration is demo steps only",
            }
            raise refuse(f"source ({source!r}): the {self.control} is in control; {hint[source]}")

    def label(self, outcome: str, reason: str) -> None:
        """Relabel the last step: a failure (Section IV-A's cut) or a truncation."""
        if not len(self):
            raise refuse("label: no step to label yet")
        if self.ended == "success":
            raise EpisodeRefused(f"label: the episode succeeded at step {len(self) - 1}")
        failed = outcome == "failure"
        self.recorder.relabel_end(
            reward=eq14_reward(success=False, failed=failed, c_fail=self.c_fail),
            done=failed,
            truncated=not failed,
            reason=reason,
        )
        self.ended = outcome

    def intervention_start(self, reason: str) -> None:
        if self.control != "policy" or self.last_source != "policy":
            raise refuse(
                "intervention_start: the policy must have acted (a policy step "
                "last, no intervention open)"
            )
        self.label("failure", reason)  # refuses a success  # the cut fragment is a labelled failure
        self.control, self.fragment, self.takeovers = "human", self.fragment + 1, self.takeovers + 1
        self.ended = None

    def intervention_end(self) -> None:
        if self.control != "human" or self.last_source != "human":
            raise refuse("intervention_end: no intervention with a human step is open")
        if self.ended is not None:
            raise EpisodeRefused(
                f"intervention_end: the operator's fragment ended with {self.ended}"
            )
        self.label("truncated", "")  # a handback: the operator's fragment has no outcome
        self.control, self.fragment, self.ended = "policy", self.fragment + 1, None

    def episode(self) -> D.Episode:
        if not len(self):
            raise refuse("episode_end: the episode has no steps; discard it instead")
        iteration = self.version + 1  # policy k collects iteration k + 1's data, as in train
        meta: dict[str, Any] = {
            "seed": self.seed,
            "iteration": iteration,
            "takeovers": self.takeovers,
        }
        where = SimpleNamespace(task=self.task, instruction=self.instruction)
        return self.recorder.episode(cast(Any, where), meta)
