"""Time `aloe serve` over loopback against in-process inference, and asynchronous against
synchronous chunk execution on a paced MetaWorld robot.

    python benchmarks/serve_latency.py [--requests 50] [--episodes 2] [--hz 30] [--steps 100]

Untrained networks of the `default` and `paper` presets (inference cost does not depend on
the weights). The server runs as `aloe serve` in a process of its own, as on a robot's
network; both sides use one torch thread. Prints one JSON object:

- `latency.<preset>`: in-process p50/p99 (the chunk sampled where the policy lives) and
  the loopback round trip p50/p99 (msgpack encode, websocket, decode, the same sampling,
  and back), with the server's own `infer_ms` beside it;
- `execution.<preset>.<mode>`: robot seconds per episode and seconds idle waiting for a
  chunk, the robot stepping at --hz (sync, async, async + RTC).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def untrained_run(preset_name: str, out: Path) -> Path:
    """A run directory of the preset with an untrained learner as checkpoint 0."""
    from aloe import checkpoint
    from aloe.config import preset
    from aloe.datasets.store import EpisodeStore
    from aloe.envs.metaworld import CONTROL_HZ, TaskEnv
    from aloe.run import build_learner

    cfg = preset(preset_name)
    cfg.out = out
    cfg.env = dataclasses.replace(cfg.env, c_fail=100.0)
    cfg = cfg.resolved()
    out.mkdir(parents=True)
    (out / "config.json").write_text(cfg.to_json())
    state = {"learner": build_learner(cfg).state_dict(), "history": [{"iteration": 0}]}
    checkpoint.save(out / "checkpoints", 0, state)
    env = TaskEnv(cfg.env)
    EpisodeStore.create(
        out / "dataset",
        fps=CONTROL_HZ,
        state_dim=env.state_dim,
        action_dim=env.action_dim,
        sim_state_dim=env.sim_state_dim,
    )
    return out


def percentiles(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def in_process(run: Path, n: int) -> dict[str, float]:
    from aloe.run import load_run
    from aloe.serve.policy import ServedPolicy

    policy = ServedPolicy(load_run(run))
    gen = policy.rng(0)
    obs = {"state": np.zeros(39, np.float32), "instruction": ""}
    policy.infer(obs, gen)  # warm-up
    times = []
    for _ in range(n):
        start = time.perf_counter()
        policy.infer(obs, gen)
        times.append(1e3 * (time.perf_counter() - start))
    return percentiles(times)


def start_server(run: Path) -> tuple[subprocess.Popen[str], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "aloe.cli", "serve", "--run", str(run), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "aloe serve: ... on ws://...; Ctrl-C stops"
    if "on ws://" not in line:
        proc.kill()
        raise RuntimeError(f"aloe serve did not start: {line}{proc.stderr.read()}")
    return proc, f"ws://127.0.0.1:{port}"


def loopback(url: str, n: int) -> dict[str, float]:
    from aloe.robot.connection import Connection

    conn = Connection(url)
    request = {"observation.state": np.zeros(39, np.float32)}
    conn.call(request)
    times, infer = [], []
    for _ in range(n):
        start = time.perf_counter()
        reply = conn.call(request)
        times.append(1e3 * (time.perf_counter() - start))
        infer.append(reply["server_timing"]["infer_ms"])
    conn.close()
    server = {f"server_infer_{k}": v for k, v in percentiles(infer).items()}
    return {**percentiles(times), **server}


def execution(url: str, run: Path, episodes: int, hz: float, steps: int) -> dict[str, Any]:
    """Operator-free episodes of `steps` steps at `hz`, not recorded, in each mode."""
    from aloe.envs.metaworld import TaskEnv
    from aloe.robot.client import RobotClient
    from aloe.robot.connection import Connection
    from aloe.robot.sim import Paced
    from aloe.run import read_run_config

    cfg = read_run_config(run)
    env = Paced(TaskEnv(dataclasses.replace(cfg.env, max_steps=steps)), hz)
    out = {}
    for mode, asynchronous, rtc in [
        ("sync", False, False),
        ("async", True, False),
        ("async_rtc", True, True),
    ]:
        client = RobotClient(Connection(url), asynchronous=asynchronous, rtc=rtc)
        played = [client.episode(env, seed, record=False) for seed in range(episodes)]  # type: ignore[arg-type]
        out[mode] = {
            "robot_s_per_episode": round(float(np.mean([p.wall_s for p in played])), 3),
            "idle_s_per_episode": round(float(np.mean([p.idle_s for p in played])), 3),
            "steps_per_episode": float(np.mean([p.counts.steps for p in played])),
            "chunks": client.timing.chunks,
            "rtt_p50_ms": round(client.timing.summary()["rtt_p50_ms"], 2),
        }
        client.conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--hz", type=float, default=30.0, help="robot control rate (paper: 30)")
    parser.add_argument("--steps", type=int, default=100, help="steps per episode")
    parser.add_argument("--presets", default="default,paper")
    args = parser.parse_args()
    torch.set_num_threads(1)
    report: dict[str, Any] = {"hz": args.hz, "latency": {}, "execution": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets.split(","):
            run = untrained_run(name, Path(tmp) / name)
            proc, url = start_server(run)
            try:
                report["latency"][name] = {
                    "in_process": in_process(run, args.requests),
                    "loopback": loopback(url, args.requests),
                }
                report["execution"][name] = execution(url, run, args.episodes, args.hz, args.steps)
            finally:
                proc.terminate()
                proc.wait(30)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
