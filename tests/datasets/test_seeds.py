"""One writer assigns seeds: concurrent collectors into one store claim seeds under the
store's lock, so none is recorded twice, and a killed collector's seed is free again."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_store import STORE_KW, make_episode

from aloe.datasets.store import EpisodeStore
from aloe.errors import UsageError

# A collector: waits for the start file, then claims seeds from 0 and appends an episode
# for each; prints the seeds it recorded. argv: root, this folder, start file, episodes.
COLLECTOR = r"""
import contextlib, os, sys, time
sys.path.insert(0, sys.argv[2])
from test_store import STORE_KW, make_episode
from aloe.datasets.store import EpisodeStore

root, start, n = sys.argv[1], sys.argv[3], int(sys.argv[4])
while not os.path.exists(start):
    time.sleep(0.005)
store = EpisodeStore.open_or_create(root, **STORE_KW)
with contextlib.closing(store.claim_seeds(0)) as seeds:
    for _ in range(n):
        seed = next(seeds)
        time.sleep(0.01)  # an episode takes a while: the others claim meanwhile
        store.append(make_episode(seed))
        print(seed, flush=True)
"""


@pytest.mark.slow
def test_three_concurrent_collectors_never_record_a_seed_twice(tmp_path: Path) -> None:
    root, start = tmp_path / "store", tmp_path / "go"
    here = str(Path(__file__).parent)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", COLLECTOR, str(root), here, str(start), "6"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    start.touch()  # all three create-or-open the new store at once
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    printed = [int(s) for out, _ in outs for s in out.split()]
    store = EpisodeStore.open(root)
    seeds = store.episodes()["seed"].to_pylist()
    assert sorted(seeds) == sorted(printed) == list(range(18))  # distinct, and no gap
    assert store.check() == []
    assert not list((root / "meta/.claims").iterdir())  # every claim released


def test_a_claimed_seed_is_skipped_and_freed_when_its_collector_dies(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = EpisodeStore.create(root, **STORE_KW)
    store.append(make_episode(1))
    holder = r"""
import sys
sys.path.insert(0, sys.argv[2])
from test_store import STORE_KW
from aloe.datasets.store import EpisodeStore
seeds = EpisodeStore.open(sys.argv[1]).claim_seeds(0)
print(next(seeds), flush=True)
sys.stdin.read()  # holds the claim until killed
"""
    here = str(Path(__file__).parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(root), here],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "0"
    with contextlib.closing(store.claim_seeds(0)) as seeds:
        assert next(seeds) == 2  # 0 is claimed by the live holder, 1 is stored
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with contextlib.closing(store.claim_seeds(0)) as seeds:
        assert next(seeds) == 0  # the dead holder's claim died with it


def test_claims_run_out_below_the_stop(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "store", **STORE_KW)
    store.append([make_episode(5), make_episode(6)])
    seeds = store.claim_seeds(5, stop=7)
    with pytest.raises(UsageError, match="every seed from 5 to 6 is stored"):
        next(seeds)
