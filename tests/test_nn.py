"""aloe.nn's evaluation shortcuts: a transformer pass that reuses a fixed prefix, and
`compilable` methods (torch.compile behind a flag, eager where compiling fails)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from aloe.config import preset
from aloe.critics.chunked_q import ChunkedQCritic, CriticConfig
from aloe.nn import FixedPrefix, compilable, set_compiled, transformer
from aloe.policies.flow import ActorConfig, FlowPolicy
from aloe.run import build_learner


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_a_fixed_prefix_gives_the_full_pass_on_the_suffix(layers: int) -> None:
    torch.manual_seed(0)
    net = transformer(16, layers, 2, 4, 0.1).eval()  # dropout off in eval mode
    prefix, suffix = torch.randn(3, 2, 16), torch.randn(3, 5, 16)
    with torch.no_grad():
        want = net(torch.cat([prefix, suffix], dim=1))[:, 2:]
        got = FixedPrefix(net, prefix)(suffix)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def _counting_module() -> tuple[type[nn.Module], list[int]]:
    """A fresh class (a `compilable` method keeps its state per function) and its calls."""
    calls: list[int] = []

    class Doubler(nn.Module):
        compiled: bool = False

        @compilable
        def forward(self, x: Tensor) -> Tensor:
            calls.append(1)
            if x.ndim == 0:
                raise ValueError("a scalar")
            return 2 * x

    return Doubler, calls


def test_a_failed_compile_warns_once_and_runs_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compiler(fn: object) -> object:
        def fail(*args: object) -> object:
            raise RuntimeError("InductorError: no C++ compiler found\nmore detail")

        return fail

    monkeypatch.setattr(torch, "compile", no_compiler)
    cls, _ = _counting_module()
    module = cls()
    set_compiled(True, module)
    with pytest.warns(RuntimeWarning, match=r"no C\+\+ compiler found\); it runs eagerly") as seen:
        assert torch.equal(module(torch.ones(2)), torch.full((2,), 2.0))
    assert len(seen) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(module(torch.ones(2)), torch.full((2,), 2.0))  # eager, no warning


def test_an_error_of_the_method_itself_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda fn: fn)  # "compiled" = the method itself
    cls, calls = _counting_module()
    module = cls()
    set_compiled(True, module)
    with pytest.raises(ValueError, match="a scalar"):
        module(torch.tensor(1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiling did not fail: no warning, still compiled
        module(torch.ones(2))
    assert len(calls) == 3  # compiled and eager tries of the scalar, then one call


def test_set_compiled_reaches_submodules_that_have_compilable_methods() -> None:
    cls, _ = _counting_module()
    outer = nn.Sequential(cls(), nn.Linear(2, 2), nn.Sequential(cls()))
    set_compiled(True, outer, "not a module")
    assert [m.compiled for m in outer.modules() if isinstance(m, cls)] == [True, True]
    assert not hasattr(outer[1], "compiled")
    set_compiled(False, outer)
    assert not any(m.compiled for m in outer.modules() if isinstance(m, cls))


def _can_compile() -> str | None:
    """None if torch.compile works here, else why not."""
    try:
        torch.compile(lambda x: x + 1)(torch.ones(1))
    except Exception as e:
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:120]}"
    return None


@pytest.mark.slow
def test_compiled_and_eager_networks_agree() -> None:
    """The actor's sampling, its velocity network with gradients, and the critic's forward
    give the same numbers compiled and eager, to 1e-5 (a compile per graph: tens of seconds)."""
    why = _can_compile()
    if why is not None:
        pytest.skip(f"torch.compile cannot run here ({why})")
    torch.manual_seed(0)
    actor = FlowPolicy(ActorConfig(hidden_dim=16, num_layers=2, num_heads=2), 5, 2, 1, horizon=4)
    critic = ChunkedQCritic(
        CriticConfig(hidden_dim=16, num_layers=2, num_heads=2), 5, 2, 1, horizon=4
    )
    state, task = torch.randn(3, 5), torch.zeros(3, dtype=torch.long)
    chunk, valid = (
        torch.rand(3, 4, 2) * 2 - 1,
        torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]),
    )

    def outputs() -> list[Tensor]:
        sampled = actor.sample(state, task, 2, torch.Generator().manual_seed(1))
        loss = actor.flow_loss_per_sample(
            state, task, chunk, valid, torch.Generator().manual_seed(2)
        )
        grads = torch.autograd.grad(loss.sum(), list(actor.parameters()))
        q = critic.raw(state, task, chunk, valid)
        q_grads = torch.autograd.grad(q.sum(), list(critic.parameters()))
        return [sampled, loss, *grads, q, *q_grads]

    eager = outputs()
    set_compiled(True, actor, critic)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would warn
        compiled = outputs()
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_the_compile_setting_reaches_the_learners_networks() -> None:
    """`--compile` (TrainConfig.compile) turns compiling on for the actor, the critic and
    the target critic that `build_learner` makes; off by default."""
    cfg = preset("smoke")
    assert not cfg.compile
    assert not build_learner(cfg.resolved()).actor.compiled
    cfg.compile = True
    learner = build_learner(cfg.resolved())
    assert learner.actor.compiled and learner.critic.compiled
    assert learner.target_critic.compiled
