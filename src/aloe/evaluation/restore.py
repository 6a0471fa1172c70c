"""Put a simulator back exactly where a stored step of an episode began.

Two ways, and a backend's row says which its tasks take (`aloe.envs.base.SuiteParts.restore`):

"stored", `EpisodeRestorer`: the env puts the step's stored simulator state back itself
(`restore_stored`, bit-exact: the observation equals the stored one and replaying the stored
actions reproduces the stored next observations). `restore` also rebuilds what the failure
detector and the operator's watch had counted, by replaying the stored actions from where
collection last reset those counters (the episode's reset or the start of a human fragment)
up to the row — exact because replay is — so the stall counter and the watch's patience judge
a ground-truth rollout as they judged the original episode.

"replay", `ReplayRestorer`: for a world that is more than the simulator state the store keeps
(OGBench's button and lock states, its previous-step attributes): it resets with the
episode's seed and replays the episode's stored actions up to the row, calling the env as
collection did at each fragment (`hand_to`, and `reset_progress` where an operator fragment
starts). Where a takeover rewound the world, the operator's fragment starts from an earlier
state of the episode: the replay goes back to its own snapshot of that state (the latest
replayed step observed as the fragment's first step was). Exact means, as for
`EpisodeRestorer`, that every replayed observation equals the stored one. Replay is exact, so
the counters of the failure events and of the operator's watch are the collection's too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from aloe import data as D
from aloe.envs.base import EpisodeEnv
from aloe.envs.registry import backend_of
from aloe.rollout import Watcher

COLUMNS = [D.STATE, D.NEXT_STATE, D.ACTION, D.SOURCE, D.FRAGMENT, D.SIM_STATE, D.EPISODE, D.FRAME]


class StoredStateEnv(EpisodeEnv, Protocol):
    """An env that puts a stored step back from its simulator state (a "stored" row)."""

    def restore_stored(
        self, seed: int, first_action: np.ndarray, sim_state: np.ndarray, state: np.ndarray
    ) -> np.ndarray: ...

    def resume_detector(self, first_state: np.ndarray, states: np.ndarray) -> None: ...

    def take_detector(self, other: Any) -> None: ...

    def progress_state(self) -> np.ndarray: ...

    controller: str


def episode_index(frames: Mapping[str, np.ndarray]) -> tuple[dict[int, int], np.ndarray]:
    """(episode -> its first row, each row's source as str) of a buffer that can be restored;
    ValueError where the store kept no simulator states."""
    if D.SIM_STATE not in frames:
        raise ValueError("the store has no sim.state column (record_sim_state was off)")
    ep = np.asarray(frames[D.EPISODE])
    starts = np.flatnonzero(D.run_starts(ep))
    first = dict(zip(ep[starts].tolist(), starts.tolist(), strict=True))
    return first, np.asarray(frames[D.SOURCE]).astype(str)


@dataclass
class Restored:
    obs: np.ndarray  # the observation at the row (float32), as the policy saw it
    exact: bool  # restored and replayed observations all equal the stored ones


class EpisodeRestorer:
    """Restores any stored step of a store's frames into a `StoredStateEnv` (see the module
    docstring).

    Time limit. The policy gets the budget collection gave it: `max_steps` minus the policy
    steps the episode had already taken before the row (operator steps do not count).
    """

    def __init__(
        self, frames: Mapping[str, np.ndarray], seeds: Mapping[int, int], max_steps: int
    ) -> None:
        self.f = frames
        self.seeds = seeds
        self.max_steps = max_steps
        self.first, self.source = episode_index(frames)

    def restorable(self, row: int) -> bool:
        return self.seeds.get(int(self.f[D.EPISODE][row])) is not None

    def restore(self, env: StoredStateEnv, row: int, watcher: Watcher | None = None) -> Restored:
        """Put env (and the watcher's counters) where `row` began."""
        f = self.f
        src = self.source
        episode = int(f[D.EPISODE][row])
        first = self.first[episode]
        counters = self._counter_start(first, row)
        watch_from = self._fragment_start(row) if src[row] == "policy" else row
        obs = env.restore_stored(
            self.seeds[episode],
            f[D.ACTION][first],
            f[D.SIM_STATE][counters],
            f[D.STATE][counters],
        )
        exact = bool(np.array_equal(obs, f[D.STATE][counters]))
        env.resume_detector(f[D.STATE][first], f[D.NEXT_STATE][first:counters])
        env.steps = int(f[D.FRAME][counters])
        env.limit = 10**9
        for k in range(counters, row):
            if watcher is not None and k == watch_from:
                watcher.start_watching()
            actor = "policy" if src[k] == "policy" else "operator"
            if actor != env.controller:  # the events judge replayed policy rows only
                env.hand_to(actor)
            out, _, _, _, info = env.step(f[D.ACTION][k])
            exact &= bool(np.array_equal(out["state"], f[D.NEXT_STATE][k]))
            if watcher is not None and src[k] == "policy" and k >= watch_from:
                watcher.watch(out, info)
        if watcher is not None and watch_from == row:
            watcher.start_watching()
        env.limit = env.steps + max(1, self.max_steps - int((src[first:row] == "policy").sum()))
        obs = np.asarray(env.progress_state(), dtype=np.float32)
        return Restored(obs, exact and bool(np.array_equal(obs, f[D.STATE][row])))

    def copy_to(self, src: StoredStateEnv, dst: StoredStateEnv, row: int) -> np.ndarray:
        """Restore `row` into another env without replaying: the state directly, the
        detector's counters copied from `src` (restored by `restore`)."""
        f = self.f
        episode = int(f[D.EPISODE][row])
        first = self.first[episode]
        obs = dst.restore_stored(
            self.seeds[episode], f[D.ACTION][first], f[D.SIM_STATE][row], f[D.STATE][row]
        )
        dst.take_detector(src)
        dst.steps = src.steps
        dst.limit = src.limit
        return obs

    def _counter_start(self, first: int, row: int) -> int:
        """The latest row <= `row` where collection reset the detector's progress counter:
        the episode's first row or the first row of a human or demo fragment."""
        fragment = np.asarray(self.f[D.FRAGMENT][first : row + 1])
        src = self.source[first : row + 1]
        starts = D.run_starts(fragment) & (src != "policy")
        starts[0] = True
        return first + int(np.flatnonzero(starts)[-1])

    def _fragment_start(self, row: int) -> int:
        ep = self.f[D.EPISODE]
        fr = self.f[D.FRAGMENT]
        k = row
        while k > 0 and ep[k - 1] == ep[row] and fr[k - 1] == fr[row]:
            k -= 1
        return k


class ReplayRestorer:
    """Restores a stored step by replaying its episode from the seeded reset (see the module
    docstring); the interface of `EpisodeRestorer`, for any `aloe.envs.base.EpisodeEnv`."""

    def __init__(
        self, frames: Mapping[str, np.ndarray], seeds: Mapping[int, int], max_steps: int
    ) -> None:
        self.f = frames
        self.seeds = seeds
        self.max_steps = max_steps
        self.first, self.source = episode_index(frames)
        self.fragment_start = D.run_starts(frames[D.EPISODE], frames[D.FRAGMENT])

    def restorable(self, row: int) -> bool:
        return self.seeds.get(int(self.f[D.EPISODE][row])) is not None

    def restore(self, env: EpisodeEnv, row: int, watcher: Watcher | None = None) -> Restored:
        """Put env (and the watcher's counters) where `row` began; exact when every replayed
        observation equals the stored one."""
        f = self.f
        src = self.source
        first = self.first[int(f[D.EPISODE][row])]
        watch_from = self._policy_fragment_start(row) if src[row] == "policy" else row
        obs, _ = env.reset(seed=self.seeds[int(f[D.EPISODE][row])])
        env.limit = 10**9  # the replay is never cut; the row's own limit is set below
        snaps: list[tuple[np.ndarray, dict]] = []  # (observation, snapshot) before each step
        exact = True
        for k in range(first, row + 1):
            if self.fragment_start[k] and src[k] != "policy":  # collection's `correct`
                if k > first:
                    obs = self._rewound(env, obs, snaps, f[D.STATE][k])
                env.reset_progress()  # and `operate`
            if self.fragment_start[k]:
                env.hand_to("policy" if src[k] == "policy" else "operator")
            exact &= bool(np.array_equal(obs["state"], f[D.STATE][k]))
            if k == row:
                break
            snaps.append((obs["state"], env.snapshot()))
            if watcher is not None and k == watch_from:
                watcher.start_watching()
            obs, _, _, _, info = env.step(f[D.ACTION][k])
            if watcher is not None and src[k] == "policy" and k >= watch_from:
                watcher.watch(obs, info)
        if watcher is not None and watch_from == row:
            watcher.start_watching()
        env.limit = env.steps + max(1, self.max_steps - int((src[first:row] == "policy").sum()))
        return Restored(np.asarray(obs["state"], dtype=np.float32), exact)

    def copy_to(self, src: EpisodeEnv, dst: EpisodeEnv, row: int) -> np.ndarray:
        """Restore `row` into another env from `src` (restored by `restore`): its snapshot."""
        obs = dst.restore(src.snapshot())
        dst.limit = src.limit
        return np.asarray(obs["state"], dtype=np.float32)

    @staticmethod
    def _rewound(
        env: EpisodeEnv, obs: dict, snaps: list[tuple[np.ndarray, dict]], start: np.ndarray
    ) -> dict:
        """The observation an operator fragment starts from: where a takeover rewound the
        world (its first observation `start` is not the current one), the latest replayed
        step observed as `start` is restored. Not found: the replay goes on from here, and
        `exact` reports the mismatch."""
        if np.array_equal(obs["state"], start):
            return obs
        for state, snap in reversed(snaps):
            if np.array_equal(state, start):
                return env.restore(snap)
        return obs

    def _policy_fragment_start(self, row: int) -> int:
        k = row
        while not self.fragment_start[k]:
            k -= 1
        return k


class Restorer(Protocol):
    """What OPE needs of a restorer (`EpisodeRestorer`, `ReplayRestorer`)."""

    def restorable(self, row: int) -> bool: ...

    def restore(self, env: Any, row: int, watcher: Watcher | None = None) -> Restored: ...

    def copy_to(self, src: Any, dst: Any, row: int) -> np.ndarray: ...


def make_restorer(
    task: str, frames: Mapping[str, np.ndarray], seeds: Mapping[int, int], max_steps: int
) -> Restorer:
    """The restorer `task`'s row names (`aloe.envs.base.SuiteParts.restore`)."""
    return RESTORERS[backend_of(task).suite.restore](frames, seeds, max_steps)


RESTORERS: dict[str, type[EpisodeRestorer] | type[ReplayRestorer]] = {
    "stored": EpisodeRestorer,
    "replay": ReplayRestorer,
}
