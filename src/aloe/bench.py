"""`aloe bench`: this machine's limits and aloe's speed against them, measured in one run.

    machine     torch's threads (set to the cores for the bench) and the fp32 matmul peak
    steps.SIZE  critic and actor steps of each preset in --sizes on synthetic batches: wall
                time, counted FLOPs, GFLOP/s, share of the peak; the actor step's parts
                (V^π sampling, Q of the data, flow forward, backward, optimiser); chunk
                inference latency for one observation (p50, p99)
    loop        raw env.step against collection with the operator (demonstrations,
                takeovers of a random policy and of the first size's actor) and evaluation,
                with policy inference and operator time per step shown apart
    sampler     ChunkSampler batches against steps of the library's default networks, at
                --horizon and --batch-size (the figures the bench has reported from the start)
    iteration   one iteration of the first size's preset split into collect, critic, actor,
                evaluate and checkpoint (unit costs times the preset's counts), and a run's
                estimate
    against     --against REV: the same figures of another git revision, measured in the
                same run by that revision's own bench, side by side with ratios
    targets     issue 33's targets beside the figures that answer them, pass or miss, for
                each revision (aloe.speed.targets)
    compile     --compile: each size's inference and steps compiled against eager, with
                the cold start (steps.SIZE.compile)

Nothing here asserts on time; the figures go into issue notes and the README. Every figure
is measured or counted (FLOPs by torch's counter, see `aloe.speed.measure`), none assumed.

Every argument is checked before any work (`BenchArgs.validate`), including whether the
horizon and batch size can fit in this machine's memory at all: `estimate_bytes` is a rough
upper estimate of the peak of one update step (see there), compared with the total memory
(not the free memory, which moves with whatever else runs), so only sizes that cannot work
anywhere on this machine are refused.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from aloe.algos.aloe_config import AloeConfig
from aloe.critics.chunked_q import CriticConfig
from aloe.envs.tasks import DEFAULT_TASK, task_list
from aloe.errors import bad, require
from aloe.policies.flow import ActorConfig
from aloe.progress import Progress
from aloe.run import resolve_device
from aloe.speed import against, learner, loop, measure, targets
from aloe.speed.against import describe_source, resolve
from aloe.speed.table import render

FRAME_BYTES = 2048  # one stored frame loaded into memory (states, sim state, columns), rounded up
SIZES = ("smoke", "default", "paper")
DEVICE = re.compile(r"cpu|auto|cuda(:\d+)?")


@dataclass
class BenchArgs:
    """Measure this machine's matmul peak and aloe's update steps, inference, collection,
    evaluation and training iteration against it; --against REV adds another git
    revision's figures, measured in the same run, side by side with ratios.

    --against exports REV's tree with `git archive` into a temporary directory (the
    repository is left as it is) and runs that revision's own `python -m aloe.cli bench`
    there (PYTHONPATH at its src/) with the options it knows set as here; figures it does
    not report show as "-" (if its bench fails, this one's figures are still reported, and
    the exit status is 1). Progress goes to stderr, the report to stdout."""

    task: str = DEFAULT_TASK
    """MetaWorld task to step (and whose state dimension the update steps see)."""
    steps: int = 3000
    """Environment steps per collection and evaluation measurement (whole episodes, so a
    little more)."""
    horizon: int = 50
    """Chunk length h of the sampler figures (and of their critic and actor steps of the
    library's default networks)."""
    batch_size: int = 256
    """Batch size of the sampler figures and of those steps."""
    sizes: tuple[Literal["smoke", "default", "paper"], ...] = ("default", "paper")
    """Presets whose update steps and inference are measured (paper: seconds per step on
    2 CPU cores; `--sizes default` skips it). The first one's actor runs the collection and
    evaluation, and its preset gives the iteration split."""
    repeats: int = 0
    """Timed update steps per size (0: 5 at smoke and default, 2 at paper)."""
    threads: int = 0
    """torch's intra-op threads during the bench (0: one per core this process may use)."""
    device: str = "cpu"
    """Torch device of the update steps and inference: cpu | cuda | cuda:N | auto."""
    compile: bool = False
    """Also time each size's chunk inference, critic step and actor step through
    torch.compile (a run's --compile): the first compiled call (the cold start, compiling
    included) and the steady state beside eager, alternated in this run."""
    json: bool = False
    """Print the figures as JSON (with --against: both revisions') instead of a table."""
    against: str | None = None
    """A git revision (commit, branch, tag, HEAD~3) of aloe's checkout to measure beside
    this one."""
    out: Path | None = None
    """Also write the figures as JSON here."""
    progress: Progress = None
    """A line on stderr as each measurement starts; --no-progress: none (the report on
    stdout is the same either way)."""

    def validate(self) -> None:
        """Every field, then the memory the sizes need: a UsageError before any work."""
        try:
            tasks = task_list(self.task)
        except ValueError as e:
            raise bad("--task", self.task, str(e)) from None
        require(len(tasks) == 1, "--task", self.task, "name one task: bench steps one env")
        for flag, value in (
            ("--steps", self.steps),
            ("--horizon", self.horizon),
            ("--batch-size", self.batch_size),
        ):
            require(value >= 1, flag, value, "must be >= 1")
        self._validate_choices()
        if self.out is not None:
            require(not self.out.is_dir(), "--out", self.out, "is a directory; give a file")
            require(self.out.parent.is_dir(), "--out", self.out, "its directory does not exist")
        if self.against is not None:
            resolve(self.against)  # the revision's own bench is probed before measuring
        have = _total_memory()
        if have is None:
            return
        room = f"more than this machine's {_gib(have)} of memory"
        frames = FRAME_BYTES * self.steps
        require(
            frames <= have,
            "--steps",
            self.steps,
            f"the collected frames need about {_gib(frames)}, {room}",
        )
        need = estimate_bytes(self.horizon, self.batch_size)
        require(
            frames + need <= have,
            f"--horizon ({self.horizon}) with --batch-size",
            self.batch_size,
            f"one update step needs about {_gib(need)}, {room}; use a "
            "smaller horizon or batch size",
        )

    def _validate_choices(self) -> None:
        sizes = " ".join(self.sizes)
        require(len(self.sizes) >= 1, "--sizes", sizes, f"name one or more of {', '.join(SIZES)}")
        require(len(set(self.sizes)) == len(self.sizes), "--sizes", sizes, "names a size twice")
        require(self.repeats >= 0, "--repeats", self.repeats, "must be >= 0 (0: per size)")
        require(self.threads >= 0, "--threads", self.threads, "must be >= 0 (0: one per core)")
        require(
            DEVICE.fullmatch(self.device) is not None,
            "--device",
            self.device,
            "must be cpu, cuda, cuda:N or auto",
        )
        if self.device.startswith("cuda"):
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = int(self.device.partition(":")[2] or 0)
            require(
                index < count,
                "--device",
                self.device,
                f"this machine has {count} CUDA device(s); use --device cpu or auto",
            )


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def estimate_bytes(horizon: int, batch_size: int) -> int:
    """A rough upper estimate of the peak memory of one update step, in bytes.

    Per transformer layer and sample, backpropagation keeps the attention scores and
    weights (2·H·T² floats for T tokens) and the layer's activations ((8 + 2·mlp_ratio)·T·D
    floats). The critic step (T = h + K + 3 tokens) and the actor step (T = h + 3) each keep
    every layer; ALOE's M value samples run the critic without gradient on B·M chunks, one
    layer alive at a time. Real peaks are lower (fused kernels, freed buffers): this only
    tells sizes that cannot fit. The collected frames come on top (FRAME_BYTES each).
    """
    actor = ActorConfig()
    critic = CriticConfig()
    m = AloeConfig().num_value_samples

    def layer(heads: int, tokens: int, width: int, mlp_ratio: int) -> int:
        return 2 * heads * tokens**2 + (8 + 2 * mlp_ratio) * tokens * width

    t_c = horizon + critic.num_q + 3
    t_a = horizon + 3
    per_critic = layer(critic.num_heads, t_c, critic.hidden_dim, critic.mlp_ratio)
    per_actor = layer(actor.num_heads, t_a, actor.hidden_dim, actor.mlp_ratio)
    floats = batch_size * (
        critic.num_layers * per_critic + actor.num_layers * per_actor + m * per_critic
    )
    return 4 * floats


def _total_memory() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def cmd_bench(args: BenchArgs) -> int:
    """Measure, print (a table, or JSON with --json) and write --out; see `BenchArgs`."""
    args.validate()
    with (
        measure.quiet(args.progress is False),
        against.Revision(args.against) if args.against else nullcontext() as other,
    ):
        this = measure_all(args)
        theirs = other.run(child_options(args)) if other else None
    columns = [("this", against.flatten(this))]
    if theirs is not None:
        columns.append((str(args.against), against.flatten(theirs["figures"])))
    this["targets"] = targets.check(columns[0][1])
    text = json.dumps(this if theirs is None else {"this": this, "against": theirs}, indent=1)
    print(text if args.json else f"{render(columns)}\n\n{targets.render(columns)}")
    if args.out:
        args.out.write_text(text)
    if args.progress is not False:
        measure.say("done")
    return 1 if theirs is not None and "error" in theirs else 0


def child_options(args: BenchArgs) -> dict[str, list[str]]:
    """This run's options as flags, for the other revision's bench (`--against`)."""
    return {
        "--task": [args.task],
        "--steps": [str(args.steps)],
        "--horizon": [str(args.horizon)],
        "--batch-size": [str(args.batch_size)],
        "--sizes": list(args.sizes),
        "--repeats": [str(args.repeats)],
        "--threads": [str(args.threads)],
        "--device": [args.device],
        **({"--compile": []} if args.compile else {}),
    }


def measure_all(args: BenchArgs) -> dict[str, Any]:
    """Every figure of one revision: the machine, each size's steps, the loop, an iteration."""
    device = resolve_device(args.device)
    with measure.bench_threads(args.threads) as threads, tempfile.TemporaryDirectory() as tmp:
        measure.say(f"matmul peak ({device.type}, {threads['torch_threads']} threads)")
        peak = measure.matmul_peak(device)
        if device.type == "cpu":  # what the threads buy: parallel efficiency, or contention
            with measure.torch_threads(1):
                peak["gflops_1_thread"] = measure.matmul_peak(device, repeats=3)["gflops"]
        figures: dict[str, Any] = {
            "run": {
                "task": args.task,
                "device": str(device),
                "torch": torch.__version__,
                "source": describe_source(),
            },
            "machine": {**threads, "matmul_peak": peak},
            "steps": {},
        }
        sized = [learner.build(name, args.task, str(device)) for name in args.sizes]
        for s in sized:
            figures["steps"][s.name] = learner.measure_size(
                s, peak["gflops"], args.repeats, compile=args.compile
            )
        figures["loop"], frames = loop.measure_loop(sized[0], args.steps, Path(tmp))
        measure.say(f"sampler (h={args.horizon}, B={args.batch_size}) vs default networks' steps")
        figures["sampler"] = loop.sampler_vs_critic(
            frames, args.task, args.horizon, args.batch_size, device
        )
        figures["iteration"] = loop.measure_iteration(sized[0], figures, frames, Path(tmp))
    return figures
