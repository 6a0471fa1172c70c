"""Critic and actor steps at a preset's sizes, the actor step's parts, and chunk inference.

The learner is built as a run builds it (`aloe.run.build_learner` on the preset's config)
and fed a synthetic batch of random states of the task's dimension: what a step costs does
not depend on the values, so no environment or dataset is needed. The actor step
(`AloeLearner.actor_step`, Alg. 1 lines 11–14) is timed whole, and its parts apart, each the
learner's own call that the step makes, on one batch:

    value_sampling   V^π(s): M chunks sampled from π_θ, Q_pess of each (`value`, Eq. 10)
    q_data           Q_pess of the data chunks (`q_data`, Eq. 9)
    flow_forward     the weighted flow-matching loss (`weighted_actor_loss`, Eq. 15)
    flow_backward    its gradients (`OptimisedModule.backward`)
    optimiser        gradient clipping, the guard, AdamW, the schedule (`.apply`)
    onestep_distil   with the one-step sampler (`aloe.update_sampler`): μ's distillation
                     step that ends the actor step (`distil_step`: the flow's chunks, μ's
                     update); also every `onestep_bc_every`-th step of the warm start
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aloe.algos.aloe import AloeLearner, weighted_actor_loss
from aloe.config import TrainConfig, preset
from aloe.data import ChunkBatch
from aloe.envs.metaworld import TaskEnv
from aloe.nn import evaluating, set_compiled
from aloe.observation import Observations
from aloe.policies.chunk_policy import FlowChunkPolicy
from aloe.run import build_learner, observations
from aloe.speed.measure import Timing, count_flops, say, synchronize, time_calls, work_figures

REPEATS = {"smoke": 3, "default": 5, "paper": 2}  # timed steps; a paper step is ~3 s on 2 cores
LATENCY_CALLS = 50  # chunk inferences timed for p50 and p99


@dataclass
class Sized:
    """One preset's learner, ready to step."""

    name: str
    cfg: TrainConfig
    obs: Observations
    learner: AloeLearner

    @property
    def device(self) -> torch.device:
        return self.learner.device

    def describe(self) -> str:
        c = self.cfg
        a = self.cfg.actor
        q = self.cfg.critic
        return (
            f"h={c.horizon} B={c.optim.batch_size} M={c.aloe.num_value_samples} "
            f"flow_steps={a.num_flow_steps} actor {a.hidden_dim}x{a.num_layers} "
            f"critic {q.hidden_dim}x{q.num_layers} K={q.num_q}"
        )


def build(name: str, task: str, device: str) -> Sized:
    """The preset's learner as `aloe train --preset NAME` builds it (seeded, untrained)."""
    cfg = preset(name, task)
    cfg.device = device
    cfg = cfg.resolved()
    obs = observations(cfg, device)
    torch.manual_seed(cfg.seed)
    return Sized(name, cfg, obs, aloe_learner(cfg, obs))


def aloe_learner(cfg: TrainConfig, obs: Observations | None = None) -> AloeLearner:
    """`build_learner(cfg)`, which for ALOE's config is an `AloeLearner`."""
    learner = build_learner(cfg, obs=obs)
    if not isinstance(learner, AloeLearner):
        raise TypeError(f"algo {cfg.algo!r} builds a {type(learner).__name__}, not ALOE's learner")
    return learner


def synthetic_batch(
    batch: int,
    state_dim: int,
    horizon: int,
    action_dim: int = TaskEnv.ACTION_DIM,
    gamma: float = 0.99,
    seed: int = 0,
) -> ChunkBatch:
    """Random states and chunks, every step valid and bootstrapped, one task."""
    gen = torch.Generator().manual_seed(seed)
    zeros = torch.zeros(batch, dtype=torch.long)
    return ChunkBatch(
        state=torch.randn(batch, state_dim, generator=gen),
        actions=torch.rand(batch, horizon, action_dim, generator=gen) * 2 - 1,
        valid=torch.ones(batch, horizon),
        reward=torch.full((batch,), -float(horizon)),
        next_state=torch.randn(batch, state_dim, generator=gen),
        discount=torch.full((batch,), gamma**horizon),
        bootstrap=torch.ones(batch),
        mc_return=torch.full((batch,), -10.0 * horizon),
        task_index=zeros,
        source=zeros,
        global_index=torch.arange(batch),
    )


def batch_for(s: Sized) -> ChunkBatch:
    return synthetic_batch(
        s.cfg.optim.batch_size,
        s.obs.dim,
        s.cfg.horizon,
        s.learner.actor.action_dim,
        gamma=s.cfg.optim.gamma,
    )


def measure_size(
    s: Sized,
    peak_gflops: float,
    repeats: int = 0,
    latency_calls: int = LATENCY_CALLS,
    compile: bool = False,
) -> dict[str, Any]:
    """Critic step, actor step and its parts, and chunk inference of one preset's learner;
    with `compile`, also `compiled_figures`."""
    n = repeats or REPEATS.get(s.name, 3)
    batch = batch_for(s)
    say(f"{s.name}: critic step ({n} timed, {s.describe()})")
    critic = _step(lambda: s.learner.critic_step(batch), n, s.device, peak_gflops)
    say(f"{s.name}: actor step ({n} timed)")
    actor = _step(lambda: s.learner.actor_step(batch), n, s.device, peak_gflops)
    say(f"{s.name}: actor step parts ({n} timed)")
    parts = actor_parts(s.learner, batch, n, peak_gflops)
    summed = sum(p["ms"] for p in parts.values())
    for part in parts.values():
        part["share_of_step"] = part["ms"] / actor["ms"]
    say(f"{s.name}: chunk inference ({latency_calls} calls)")
    figures = {
        "sizes": s.describe(),
        "critic_step": critic,
        "actor_step": actor,
        "actor_parts": {**parts, "sum_ms": summed, "other_ms": actor["ms"] - summed},
        "inference": inference_latency(s, latency_calls),
    }
    if compile:
        say(f"{s.name}: compiled against eager (the first calls compile)")
        figures["compile"] = compiled_figures(s, n, latency_calls)
    return figures


def _step(
    fn: Callable[[], Any], repeats: int, device: torch.device, peak_gflops: float
) -> dict[str, float]:
    timing = time_calls(fn, repeats, warmup=1, device=device)
    return work_figures(timing.median, count_flops(fn), peak_gflops)


def actor_parts(
    learner: AloeLearner, batch: ChunkBatch, repeats: int, peak_gflops: float
) -> dict[str, dict[str, float]]:
    """Each part of `AloeLearner.actor_step` timed alone: the learner's own calls, in the
    step's order (see the module docstring)."""
    device = learner.device
    critic = learner.critic
    opt = learner.actor_opt
    b = batch.to(device)

    @torch.no_grad()
    def value() -> Tensor:
        with evaluating(critic):  # as `actor_weights` calls it
            return learner.value(b)  # Eq. 10

    w, metrics = learner.actor_weights(b)  # Eq. 9–11

    def forward() -> Tensor:
        return weighted_actor_loss(learner.actor, b, w, learner.generator)[0]  # Eq. 15

    def step() -> None:
        opt.apply(dict(metrics), "actor")

    timings = {
        "value_sampling": time_calls(value, repeats, device=device),
        "q_data": time_calls(lambda: learner.q_data(b), repeats, device=device),
        **_update_timings(forward, opt.backward, step, repeats, device),
    }
    flops = {
        "value_sampling": count_flops(value),
        "q_data": count_flops(lambda: learner.q_data(b)),
        **_update_flops(forward, opt.backward, step),
    }
    if learner.onestep is not None:
        timings["onestep_distil"] = time_calls(
            lambda: learner.distil_step(b), repeats, device=device
        )
        flops["onestep_distil"] = count_flops(lambda: learner.distil_step(b))
    return {k: work_figures(t.median, flops[k], peak_gflops) for k, t in timings.items()}


def _update_timings(
    forward: Callable[[], Tensor],
    backward: Callable[[Tensor], None],
    step: Callable[[], None],
    repeats: int,
    device: torch.device,
) -> dict[str, Timing]:
    """Forward, backward and optimiser of the same updates, timed apart (one warm-up)."""
    seconds: dict[str, list[float]] = {"flow_forward": [], "flow_backward": [], "optimiser": []}
    for i in range(repeats + 1):
        loss = _timed(seconds["flow_forward"], i > 0, device, forward)
        _timed(seconds["flow_backward"], i > 0, device, backward, loss)
        _timed(seconds["optimiser"], i > 0, device, step)
    return {k: Timing(v) for k, v in seconds.items()}


def _timed(
    into: list[float], keep: bool, device: torch.device, fn: Callable[..., Any], *args: Any
) -> Any:
    """fn(*args), its wall time appended to `into` if `keep`."""
    start = time.perf_counter()
    out = fn(*args)
    synchronize(device)
    if keep:
        into.append(time.perf_counter() - start)
    return out


def _update_flops(
    forward: Callable[[], Tensor], backward: Callable[[Tensor], None], step: Callable[[], None]
) -> dict[str, int]:
    box: list[Tensor] = []
    return {
        "flow_forward": count_flops(lambda: box.append(forward())),
        "flow_backward": count_flops(lambda: backward(box.pop())),
        "optimiser": count_flops(step),
    }


def one_chunk(s: Sized) -> Callable[[], Any]:
    """One observation -> one chunk through `FlowChunkPolicy`, as collection calls it."""
    policy = FlowChunkPolicy(
        s.learner.actor,
        version=0,
        exec_horizon=s.cfg.exec_horizon,
        seed=0,
        device=s.device,
        obs=s.obs,
    )
    obs = {"state": np.random.default_rng(0).standard_normal(s.obs.dim).astype(np.float32)}
    return lambda: policy.act_chunk(obs)


def inference_latency(s: Sized, calls: int) -> dict[str, float]:
    """`one_chunk` as collection and evaluation call it: p50 and p99 over `calls` calls, and
    its counted GFLOP."""
    act = one_chunk(s)
    timing = time_calls(act, calls, warmup=3, device=s.device)
    return {
        "p50_ms": 1e3 * timing.percentile(50),
        "p99_ms": 1e3 * timing.percentile(99),
        "calls": calls,
        "gflop": count_flops(act) / 1e9,
    }


def compiled_figures(s: Sized, repeats: int, calls: int) -> dict[str, dict[str, float]]:
    """Chunk inference, the critic step and the actor step with the learner's networks
    through torch.compile (`aloe.nn.set_compiled`, as a run's --compile): the first compiled
    call (the cold start: compiling every graph that call meets first; later shapes compile
    again), then eager and compiled calls alternated, `repeats` of each (`calls` for
    inference), for the steady state (medians) and their ratio. Compiling is off after."""
    batch = batch_for(s)
    work = {
        "inference": (one_chunk(s), calls),
        "critic_step": (lambda: s.learner.critic_step(batch), repeats),
        "actor_step": (lambda: s.learner.actor_step(batch), repeats),
    }
    nets = list(vars(s.learner).values())
    out = {}
    for name, (fn, n) in work.items():
        fn()  # eager first: the allocator and lazy state warm, as for every other figure
        seconds: dict[str, list[float]] = {"cold": [], "eager": [], "compiled": []}
        _timed(seconds["cold"], True, s.device, _compiled, nets, fn)
        for _ in range(n):
            _timed(seconds["eager"], True, s.device, fn)
            _timed(seconds["compiled"], True, s.device, _compiled, nets, fn)
        eager = Timing(seconds["eager"]).median
        compiled = Timing(seconds["compiled"]).median
        out[name] = {
            "cold_start_s": seconds["cold"][0],
            "eager_ms": 1e3 * eager,
            "compiled_ms": 1e3 * compiled,
            "compiled_vs_eager": compiled / eager,
        }
    return out


def _compiled(nets: list[Any], fn: Callable[[], Any]) -> Any:
    """fn() with the networks among `nets` compiled (`set_compiled`), eager again after."""
    set_compiled(True, *nets)
    try:
        return fn()
    finally:
        set_compiled(False, *nets)
