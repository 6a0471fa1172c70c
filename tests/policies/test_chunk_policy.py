"""What acting samples under (`chunk_policy.acting`): the compact actor's chunks without
autograd, on one thread, and the process's settings restored after."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from aloe.policies.chunk_policy import FlowChunkPolicy, acting
from aloe.policies.flow import ActorConfig, FlowPolicy


def tiny_actor() -> FlowPolicy:
    torch.manual_seed(0)
    cfg = ActorConfig(hidden_dim=16, num_layers=1, num_heads=2, num_flow_steps=3)
    return FlowPolicy(cfg, state_dim=5, action_dim=2, num_tasks=1, horizon=4)


def test_the_compact_actor_acts_in_inference_mode_on_one_thread() -> None:
    before = (torch.get_num_threads(), torch.backends.mkldnn.enabled)
    torch.set_num_threads(2)
    try:
        with acting(tiny_actor()):
            assert torch.is_inference_mode_enabled()
            assert torch.get_num_threads() == 1
            assert not torch.backends.mkldnn.enabled
        assert torch.get_num_threads() == 2 and torch.backends.mkldnn.enabled
    finally:
        torch.set_num_threads(before[0])
    with acting(nn.Linear(2, 2)):  # any other actor: gradients off, settings untouched
        assert not torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        assert torch.backends.mkldnn.enabled == before[1]


def test_acting_draws_the_chunks_that_sample_draws() -> None:
    actor = tiny_actor()
    policy = FlowChunkPolicy(actor, version=0, exec_horizon=2, seed=3, device=torch.device("cpu"))
    obs = {"state": np.linspace(-1, 1, 5, dtype=np.float32)}
    got = policy.act_chunk(obs)
    policy.reset(0)
    state, row = policy.inputs(obs)
    want = actor.sample(state, row, 1, policy.generator)[0, 0].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
