"""Timing, FLOP counting and the machine's matmul peak: what every bench figure is made of.

FLOPs are counted, never estimated by hand: `count_flops` runs the code under torch's
`FlopCounterMode`, which counts matrix products, convolutions and attention (2 per
multiply-add; elementwise work is not counted). Two gaps of that counter are closed here:
CPU's fused attention kernel has no formula in torch (it would count as zero), and
`nn.MultiheadAttention`'s fused inference path is opaque to it, so counting switches that
path off: the same matrix products run, decomposed, and are counted. Timing never counts.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

_SAYING = [True]  # False inside `quiet()`: `aloe bench --no-progress`


def say(message: str) -> None:
    """A progress line on stderr (stdout carries the report); none inside `quiet()`."""
    if _SAYING[-1]:
        print(f"aloe bench: {message}", file=sys.stderr, flush=True)


@contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """No progress lines while inside, if `enabled`."""
    _SAYING.append(_SAYING[-1] and not enabled)
    try:
        yield
    finally:
        _SAYING.pop()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer sees it finish."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Wall times of repeated calls, in seconds."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return float(np.median(self.seconds))

    @property
    def best(self) -> float:
        return float(min(self.seconds))

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.seconds, q))


def time_calls(
    fn: Callable[[], Any], repeats: int, warmup: int = 1, device: torch.device | None = None
) -> Timing:
    """`repeats` timed calls of fn after `warmup` untimed ones (allocator, caches, lazy init)."""
    device = device or torch.device("cpu")
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return Timing(seconds)


def _cpu_attention(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(
    grad_out: Any, query: Any, key: Any, value: Any, *args: Any, **kwargs: Any
) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch counts the CUDA attention kernels only; these are the ones nn.MultiheadAttention
# runs on CPU (arguments as shapes: FlopCounterMode passes shapes to custom formulas).
_aten = torch.ops.aten
CPU_ATTENTION: dict[Any, Callable[..., int]] = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call of fn, as counted by FlopCounterMode (above)."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, n: int | None = None, repeats: int = 5) -> dict[str, float]:
    """fp32 GFLOP/s of an n×n by n×n torch.mm, best of `repeats`: this machine's reachable
    peak, against which every step's share is given (n: 2048 on CPU, 8192 on a GPU)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen, device=device) for _ in range(2))
    timing = time_calls(lambda: torch.mm(a, b), repeats, warmup=1, device=device)
    flops = count_flops(lambda: torch.mm(a, b))
    return {"n": n, "ms": 1e3 * timing.best, "gflops": flops / timing.best / 1e9}


def work_figures(seconds: float, flops: int, peak_gflops: float) -> dict[str, float]:
    """Wall time, counted GFLOP, achieved GFLOP/s and its share of the measured peak."""
    gflops = flops / seconds / 1e9
    return {
        "ms": 1e3 * seconds,
        "gflop": flops / 1e9,
        "gflops": gflops,
        "peak_share": gflops / peak_gflops,
    }


def cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """torch's intra-op threads set to n for the block, then restored; yields the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@contextmanager
def bench_threads(n: int = 0) -> Iterator[dict[str, int]]:
    """torch's threads set to n (0: `cores()`, a thread per core, none oversubscribed on a
    quiet machine) for the bench, restored afterwards; yields the counts before and during."""
    before = torch.get_num_threads()
    with torch_threads(n or cores()) as used:
        yield {"cores": cores(), "torch_threads_before": before, "torch_threads": used}
