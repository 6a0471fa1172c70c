"""How `aloe train` spreads a run over processes: checked before any work, never saved in
config.json (the same run may resume with another number of workers or processes)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from aloe.errors import require
from aloe.extras import install_hint

RAY_EXTRA = f"{install_hint('ray')} (or pip install 'ray==2.60.0')"


@dataclass(frozen=True)
class Scale:
    """`--workers`, `--ray-address`, `--worker-timeout` and `--learner-procs` of `aloe train`."""

    workers: int = 0
    """Ray actors that collect and evaluate (0: in this process, Ray not imported)."""
    ray_address: str | None = None
    """A running Ray cluster (`ray start --head` prints it); none: a local Ray."""
    worker_timeout: float = 600.0
    """Seconds an episode (or a weight broadcast) may take on a worker before the worker
    is killed, restarted and the episode re-run from its seed."""
    learner_procs: int = 1
    """Learner processes: > 1 relaunches `aloe train` under torchrun (DDP, gloo on CPU)."""

    @property
    def distributed(self) -> bool:
        """Ray workers, or one of several learner processes (torchrun's variables set)."""
        return self.workers > 0 or int(os.environ.get("WORLD_SIZE", "1")) > 1

    @classmethod
    def from_flags(
        cls,
        workers: str | None,
        ray_address: str | None,
        worker_timeout: str | None,
        learner_procs: str | None,
    ) -> Scale:
        """The flags as given (None: not given), each checked: `--workers (0): must be >= 1`."""
        n = flag_value(workers, "--workers", int)
        require(n is None or n >= 1, "--workers", n, "must be >= 1 (drop it to collect here)")
        require(
            ray_address is None or n is not None,
            "--ray-address",
            ray_address,
            "needs --workers N: the workers are what runs on the cluster",
        )
        require(
            ray_address is None or ray_address.strip() != "",
            "--ray-address",
            ray_address,
            "give host:port of a running cluster (`ray start --head` prints it) or auto",
        )
        timeout = flag_value(worker_timeout, "--worker-timeout", float)
        require(timeout is None or timeout > 0, "--worker-timeout", timeout, "must be > 0")
        procs = flag_value(learner_procs, "--learner-procs", int)
        require(procs is None or procs >= 1, "--learner-procs", procs, "must be >= 1")
        return cls(int(n or 0), ray_address, float(timeout or 600.0), int(procs or 1))

    def check_run(self, algo: str, collects_itself: bool, simulated: bool = True) -> None:
        """What the run's algorithm and this machine allow (`simulated`: its task has a
        simulator, where workers collect); nothing is imported or started."""
        if not self.workers:
            return
        require(
            simulated,
            "--workers",
            self.workers,
            "the run's task has no simulator for workers to collect in (its episodes come "
            "from `aloe robot`); drop --workers",
        )
        require(
            not collects_itself,
            "--workers",
            self.workers,
            f"algo {algo} collects its own rollouts in the driver; drop --workers "
            "or use an operator-loop algorithm (aloe, awr, dagger, bc)",
        )
        require(
            importlib.util.find_spec("ray") is not None,
            "--workers",
            self.workers,
            f"needs Ray, which is not installed: {RAY_EXTRA}",
        )


def flag_value(text: str | None, flag: str, kind: type) -> int | float | None:
    """A flag's value as `kind`, or a UsageError `--workers (two): must be an integer`."""
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        word = "an integer" if kind is int else "a number"
        require(False, flag, text, f"must be {word}")
    return None  # unreachable


def under_torchrun() -> bool:
    """Launched by torchrun (or any launcher that sets the torch.distributed variables)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ
