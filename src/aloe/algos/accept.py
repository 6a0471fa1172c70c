"""OPE-gated acceptance of an actor update (`AloeConfig.accept_margin`; beyond the paper).

Before an iteration's actor steps, V^π of the current actor is estimated by the critic on a
fixed sample of buffer states (the mean Q_pess of its chunks there, Eq. 9–10); after them,
V^π of the new actor on the same states with the same noise. The critic does not move
during the actor steps, so the two estimates differ only by the actor. Where the new one is
lower by more than the margin, the previous actor comes back with its optimiser and
schedule, as if the update had not happened: a critic-judged guard against an update that
the critic itself says made the policy worse. The estimates draw from generators of their
own and a sampler of their own, so the update's random stream is unchanged, and a resumed
run decides as the uninterrupted one did.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from aloe.algos.aloe_math import estimate_value
from aloe.algos.optimised import OptimisedModule
from aloe.data import ChunkBatch
from aloe.nn import evaluating
from aloe.policies.base import Actor

# metrics.jsonl column -> what it holds, in a run with `aloe.accept_margin` set
ACCEPT_COLUMNS = {
    "actor_accepted": "1 where the iteration's actor update was kept, 0 where reverted",
    "accept_v_before": "V^π of the actor before the update (mean Q_pess of its chunks)",
    "accept_v_after": "V^π of the updated actor on the same states and noise",
}


class AcceptanceGate:
    """The previous actor kept aside, and its V^π on `states`; `decide` after the update."""

    def __init__(
        self,
        critic: nn.Module,
        actor: Actor,
        opt: OptimisedModule,
        states: ChunkBatch,
        num_samples: int,
        seed: int,
    ) -> None:
        self.critic = critic
        self.actor = actor
        self.opt = opt
        self.states = states
        self.num_samples = num_samples
        self.seed = seed
        self.saved = copy.deepcopy(opt.state_dict("actor"))
        self.v_before = self.value()

    def value(self) -> float:
        """V^π of the actor as it is now, averaged over the states (Eq. 10)."""
        b = self.states
        generator = torch.Generator(device=b.state.device).manual_seed(self.seed)
        with evaluating(self.critic):
            v = estimate_value(
                self.critic,
                self.actor,
                b.state,
                b.task_index,
                self.num_samples,
                generator,
                images=b.images,
                time=b.time,
            )
        return float(v.mean())

    def decide(self, margin: float) -> dict[str, float]:
        """Keep the updated actor unless its V^π is below the previous one's by more than
        `margin`; then restore the previous actor and its optimiser. Returns the columns."""
        v_after = self.value()
        accepted = v_after >= self.v_before - margin
        if not accepted:
            self.opt.load_state_dict(self.saved, "actor")
        return {
            "actor_accepted": float(accepted),
            "accept_v_before": self.v_before,
            "accept_v_after": v_after,
        }
