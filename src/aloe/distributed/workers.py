"""Collection and evaluation on N Ray actors (`aloe train --workers N [--ray-address A]`).

Each actor (`EpisodeWorker`) holds its own environment, operator, observation encoder and a
CPU copy of the policy; it runs `aloe.collect.collect_episode` / `aloe.collect.evaluate`, the
same rollout loop as in-process collection. The driver keeps everything that decides what
the run is:

- it assigns the episode seeds (`episode_seed(seed, k, i)` in order of i) and commits the
  finished episodes to the store in that order, applying the collection rule (success
  quota, episode budget) in that order too; so iteration k's episodes are the same for any
  N (an episode depends on its seed and the weights alone: operator and policy noise are
  reseeded per episode). Episodes that finish after the rule is met are dropped, unseen.
- it broadcasts the weights once per iteration through Ray's object store (`ray.put`).
- every remote call has a deadline (`Scale.worker_timeout`): a worker that died (SIGKILL,
  a lost node) or hangs is killed, restarted, sent the weights again, and its episode is
  re-run from its seed. Committed episodes are on disk already; a killed driver resumes
  with `aloe train --resume` as ever.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aloe.collect import CollectConfig, CollectStats, EvalResult, collect_episode, evaluate
from aloe.data import episode_seed
from aloe.envs.registry import make_env
from aloe.errors import UsageError
from aloe.operators.profiles import make_operator
from aloe.policies.base import as_module
from aloe.policies.chunk_policy import FlowChunkPolicy
from aloe.progress import Phase
from aloe.run import observations

if TYPE_CHECKING:
    from aloe.config import TrainConfig
    from aloe.data import Episode
    from aloe.datasets.store import EpisodeStore

RETRIES = 3  # attempts of one episode on fresh workers before the run stops
START_TIMEOUT = 300.0  # seconds a new worker may take to import torch and build its envs


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at `address` (none: start a local one). Returns whether this call
    started Ray (and so should shut it down). An unreachable address is a UsageError."""
    import ray  # optional extra: ray

    if ray.is_initialized():
        return False
    if not address:  # a Ray of our own: its workers are the run, not background work
        os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        ray.init(
            address=address,
            num_cpus=None if address else num_cpus,
            include_dashboard=False,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"--ray-address ({address}): no Ray cluster answers there ({first}); "
            "start one with `ray start --head` and give the address it prints, "
            "or drop --ray-address for a local Ray"
        ) from None
    return True


class EpisodeWorker:
    """One Ray actor's environment, operator and policy (built from the run's config)."""

    def __init__(self, cfg: TrainConfig) -> None:
        torch.set_num_threads(1)  # one core per worker: the same arithmetic on any node
        self.cfg, self.pid = cfg, os.getpid()
        self.env, self.eval_env = make_env(cfg.env), make_env(cfg.env)  # MetaWorld or OGBench
        self.operator = make_operator(cfg.task, cfg.operator, seed=cfg.seed)
        self.obs = observations(cfg, "cpu")
        self.policy: Any = None

    def ready(self) -> int:
        return self.pid

    def set_policy(self, actor: Any, version: int, seed: int) -> None:
        """The actor (a CPU copy, from the object store) as this worker's chunk policy."""
        self.policy = (
            None
            if actor is None
            else FlowChunkPolicy(
                actor,
                version=version,
                exec_horizon=self.cfg.exec_horizon,
                seed=seed,
                device=torch.device("cpu"),
                obs=self.obs,
            )
        )

    def episode(self, seed: int, rule: CollectConfig, iteration: int) -> Episode:
        return collect_episode(self.env, self.operator, seed, self.policy, rule, iteration)

    def evaluate(self, seeds: list[int], batch: int) -> EvalResult:
        return evaluate(self.eval_env, self.policy, seeds, progress=False, batch=batch)


@dataclass
class _Slot:
    """A worker, and what the driver must resend when it is restarted."""

    handle: Any
    pid: int


class WorkerPool:
    """N `EpisodeWorker` actors and the driver's side of the protocol (module docstring)."""

    def __init__(self, cfg: TrainConfig, workers: int, timeout: float) -> None:
        import ray  # optional extra: ray

        self.ray = ray
        self.cfg = cfg
        self.timeout = timeout
        self.remote: Any = ray.remote(num_cpus=1)(EpisodeWorker)
        self.policy: tuple[Any, int, int] = (None, 0, 0)  # (object ref, version, seed)
        self.put_ref: Any = None
        self.put_version: int | None = None  # the weights in the object store
        self.broadcast_s: list[float] = []  # per `set_policy`: put + every worker loaded
        self.restarts = 0
        self.slots = self._start(workers)
        self.on_commit: Callable[[int, int], Any] | None = None  # tests: (k, episodes committed)

    def _start(self, n: int) -> list[_Slot]:
        """n new workers, started together (each imports torch and builds its envs)."""
        handles = [self.remote.remote(self.cfg) for _ in range(n)]
        pids = self.ray.get(
            [h.ready.remote() for h in handles], timeout=max(self.timeout, START_TIMEOUT)
        )
        return [_Slot(h, pid) for h, pid in zip(handles, pids, strict=True)]

    def _restart(self, i: int) -> None:
        """Replace worker i (dead or overdue) by a fresh one holding the current policy."""
        self.ray.kill(self.slots[i].handle, no_restart=True)
        self.slots[i] = self._start(1)[0]
        self.restarts += 1
        ref, version, seed = self.policy
        self.ray.get(
            self.slots[i].handle.set_policy.remote(ref, version, seed),
            timeout=max(self.timeout, START_TIMEOUT),
        )

    def set_policy(self, actor: Any, version: int, seed: int) -> None:
        """Broadcast the weights: one `ray.put`, every worker loads them (None: demos)."""
        start = time.perf_counter()
        if actor is None or version != self.put_version:  # eval k and collect k+1 share one
            self.put_ref = self.ray.put(None if actor is None else _cpu_copy(actor))
            self.put_version = None if actor is None else version
        ref = self.put_ref
        self.policy = (ref, version, seed)
        calls = [s.handle.set_policy.remote(ref, version, seed) for s in self.slots]
        for i, call in enumerate(calls):
            try:
                self.ray.get(call, timeout=self.timeout)
            except _worker_errors(self.ray):
                self._restart(i)
        self.broadcast_s.append(time.perf_counter() - start)

    def take_broadcast_s(self) -> float:
        """Seconds spent broadcasting weights since the last call (metrics.jsonl's
        `broadcast_s`: an iteration's collection and evaluation broadcasts)."""
        total, self.broadcast_s = sum(self.broadcast_s), []
        return total

    def collect(
        self,
        k: int,
        rule: CollectConfig,
        store: EpisodeStore,
        stats: CollectStats,
        progress: bool | None,
    ) -> CollectStats:
        """Iteration k's collection (seeds from stats.episodes on), committed in seed order."""
        rule.validate()
        start, bar = (
            stats.episodes,
            Phase(f"collect[{k}]", rule.max_episodes, progress, unit="episode"),
        )
        results: dict[int, Episode] = {}
        flight: dict[Any, tuple[int, int, float]] = {}  # ref -> (worker, i, deadline)
        tries: dict[int, int] = {}
        next_i = start
        commit = start

        def more() -> bool:
            return stats.successes < rule.success_quota and stats.episodes < rule.max_episodes

        def submit(w: int, i: int) -> None:
            seed = episode_seed(self.cfg.seed, k, i)
            ref = self.slots[w].handle.episode.remote(seed, rule, k)
            flight[ref] = (w, i, time.monotonic() + self.timeout)

        while more():
            busy = {w for w, _, _ in flight.values()}
            for w in (w for w in range(len(self.slots)) if w not in busy):
                if next_i < rule.max_episodes:
                    submit(w, next_i)
                    next_i += 1
            for w, i, ep in self._finished(flight, tries):
                if ep is None:
                    submit(w, i)  # on the restarted worker, from the same seed
                else:
                    results[i] = ep
            while commit in results and more():
                ep = results.pop(commit)
                store.append(ep)
                stats.add(ep)
                commit += 1
                bar.update(1)
                bar.set_postfix(success=stats.successes, takeovers=stats.takeovers)
                if self.on_commit is not None:
                    self.on_commit(k, commit)
        self._drain(flight)
        bar.close()
        return stats

    def _finished(
        self, flight: dict[Any, tuple[int, int, float]], tries: dict[int, int]
    ) -> list[tuple[int, int, Any]]:
        """Wait, until the nearest deadline, for episodes: (worker, i, the episode, or None
        when the worker died or overran and was restarted). A bug in an episode raises."""
        wait = max(0.0, min(d for _, _, d in flight.values()) - time.monotonic())
        ready, _ = self.ray.wait(list(flight), num_returns=1, timeout=wait)
        now = time.monotonic()
        overdue = [r for r, (_, _, d) in flight.items() if d <= now and r not in ready]
        out: list[tuple[int, int, Any]] = []
        for ref in ready:
            w, i, _ = flight.pop(ref)
            try:
                out.append((w, i, self.ray.get(ref, timeout=0)))
            except _worker_errors(self.ray) as e:
                self._retry(w, i, e, tries)
                out.append((w, i, None))
        for ref in overdue:
            w, i, _ = flight.pop(ref)
            self._retry(w, i, TimeoutError(f"no answer in {self.timeout:g} s"), tries)
            out.append((w, i, None))
        return out

    def _retry(self, w: int, i: int, error: Exception, tries: dict[int, int]) -> None:
        tries[i] = tries.get(i, 0) + 1
        if tries[i] >= RETRIES:
            raise RuntimeError(
                f"episode {i} failed on {RETRIES} workers in a row; the last: "
                f"{type(error).__name__}: {error}"
            ) from None
        self._restart(w)

    def _drain(self, flight: dict[Any, tuple[int, int, float]]) -> None:
        """Let episodes the rule no longer needs finish (a running actor call cannot be
        cancelled); a worker that overruns its deadline is restarted."""
        for ref, (w, _, deadline) in flight.items():
            try:
                self.ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except _worker_errors(self.ray, TimeoutError):
                self._restart(w)

    def evaluate(self, seeds: list[int], batch: int) -> EvalResult:
        """The seeds split in contiguous parts, one per worker, merged back in seed order."""
        n = len(self.slots)
        parts = [seeds[j * len(seeds) // n : (j + 1) * len(seeds) // n] for j in range(n)]
        results: list[EvalResult | None] = [None] * n
        for _ in range(RETRIES):
            calls = {
                j: self.slots[j].handle.evaluate.remote(p, batch)
                for j, p in enumerate(parts)
                if p and results[j] is None
            }
            for j, call in calls.items():
                try:
                    results[j] = self.ray.get(call, timeout=self.timeout)
                except _worker_errors(self.ray, TimeoutError):
                    self._restart(j)
            if all(r is not None or not p for r, p in zip(results, parts, strict=True)):
                return merge([r for r in results if r is not None])
        raise RuntimeError(f"evaluation failed on {RETRIES} workers in a row")

    def close(self) -> None:
        for slot in self.slots:
            self.ray.kill(slot.handle, no_restart=True)
        self.slots = []


def merge(parts: list[EvalResult]) -> EvalResult:
    """One EvalResult of consecutive parts, as `evaluate` on all their seeds would give."""
    lengths = [n for p in parts for n in p.lengths]
    successes = [s for p in parts for s in p.successes]
    ok = [n for n, s in zip(lengths, successes, strict=True) if s]
    return EvalResult(
        success_rate=float(np.mean(successes)) if successes else 0.0,
        mean_steps_to_success=float(np.mean(ok)) if ok else float("nan"),
        episodes=len(lengths),
        env_steps=int(sum(lengths)),
        lengths=lengths,
        successes=successes,
        tasks=[t for p in parts for t in p.tasks],
    )


def _cpu_copy(actor: Any) -> Any:
    clone = copy.deepcopy(actor)
    as_module(clone).to("cpu").eval()
    return clone


def _worker_errors(ray: Any, *more: type[Exception]) -> tuple[type[Exception], ...]:
    """What a dead, killed or unreachable worker raises on `ray.get` (and `more`)."""
    ex = ray.exceptions
    return (
        ex.RayActorError,
        ex.WorkerCrashedError,
        ex.ObjectLostError,
        ex.GetTimeoutError,
        ex.ActorUnavailableError,
        *more,
    )
