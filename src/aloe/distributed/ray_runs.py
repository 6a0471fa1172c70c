"""`aloe compare --backend ray`: each run of a comparison as a Ray task with its resources
(`--cpus-per-run`, `--gpus-per-run`), scheduled by the cluster instead of compare's pool.

A task runs the same `aloe train` command the local pool would, as a child process of a
Ray worker on whichever node has the resources, and returns its exit code. The run's
directory and log are paths under the comparison's `--out`, so on a cluster that
directory must be on storage every node sees (NFS, a shared volume), and every node must
have the same python with aloe installed (Ray's usual one-image cluster).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any


def _run(cmd: list[str], log: str, env: dict[str, str]) -> int:
    """On the node: `cmd` with `env` over the node's environment, output appended to `log`.
    A cancelled task (KeyboardInterrupt) kills its child (subprocess.call does)."""
    with open(log, "ab") as f:
        return subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **env})


class RayRun:
    """One run as a Ray task, with the part of `subprocess.Popen` compare's loop uses."""

    def __init__(
        self, cmd: list[str], log: Path, env: dict[str, str], cpus: float, gpus: float
    ) -> None:
        import ray  # optional extra: ray

        self.ray = ray
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_run)
        self.ref = task.remote(cmd, str(log), env)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            ready, _ = self.ray.wait([self.ref], timeout=0)
            if ready:
                self.returncode = self._result(timeout=0)
        return self.returncode

    def _result(self, timeout: float) -> int:
        try:
            return int(self.ray.get(self.ref, timeout=timeout))
        except (
            self.ray.exceptions.RayTaskError,
            self.ray.exceptions.WorkerCrashedError,
            self.ray.exceptions.TaskCancelledError,
            self.ray.exceptions.NodeDiedError,
        ):
            return 1  # the node or its worker died: re-running the comparison resumes it

    def terminate(self) -> None:
        self.ray.cancel(self.ref)

    def wait(self, timeout: float = 60.0) -> Any:
        if self.returncode is None:
            try:
                self.returncode = self._result(timeout)
            except self.ray.exceptions.GetTimeoutError:
                self.ray.cancel(self.ref, force=True)
                self.returncode = 1
        return self.returncode
