"""`aloe robot`: MetaWorld (or a LeRobot robot) plays the robot through `aloe serve`.

The served run's config comes with the server's metadata, so the simulated robot mirrors
what `aloe train` would collect in-process for the next iteration: the same task and time
limit, the same operator profile, the same collection rule and episode seeds
(`aloe.data.episode_seed(run seed, iteration, i)`, continuing after the episodes the store
already holds for that iteration). Only the policy is remote. `--hz` paces the simulator
like a real robot's control clock, which is what makes asynchronous execution pay.

With `--lerobot-robot CONFIG` a LeRobot robot plays instead, and the person with
`--lerobot-teleop CONFIG` (a leader arm) is the operator: `aloe.robot.lerobot_devices`
makes the devices, `aloe.robot.lerobot_env` runs them (docs/real-robot.md). The episodes
follow the same collection rule and seeds, through the same client and recorder.

Recording needs the server's token: `--token`, else $ALOE_TOKEN, else `--token-file`, else
(a server on this machine) the `serve.token` file `aloe serve` wrote into its run directory.
"""

from __future__ import annotations

import json
import math
import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlparse

from aloe.config import TrainConfig
from aloe.data import episode_seed
from aloe.envs import registry
from aloe.envs.base import EpisodeEnv
from aloe.envs.registry import make_env
from aloe.errors import bad, require
from aloe.operators.profiles import make_operator
from aloe.robot.pacing import Paced
from aloe.robot.teleop import Rerecord, as_operator
from aloe.rollout import Takeover
from aloe.serve.auth import TOKEN_FILE, is_loopback, read_token_file

if TYPE_CHECKING:  # the serve extra's websockets: imported on use, so --help needs none
    from aloe.robot.client import RobotClient
    from aloe.robot.connection import Connection


@dataclass
class RobotArgs:
    """Act as the robot: MetaWorld through `aloe serve`, the simulated operator as teleop."""

    server: str = "ws://127.0.0.1:8000"
    """The policy server (`aloe serve`): ws://HOST:PORT, or wss:// behind TLS."""
    token: str | None = None
    """The server's token (default: $ALOE_TOKEN, else --token-file). Recording needs it."""
    token_file: Path | None = None
    """A file holding the token (default: the served run's serve.token, read when the
    server is on this machine and the file is readable)."""
    episodes: int = 0
    """Episodes to collect; 0: until the served run's collection rule is met for its next
    iteration (success quota or episode budget), counting what the store already holds."""
    mode: Literal["async", "sync"] = "async"
    """async: compute the next chunk while the current one executes; sync: wait each time."""
    rtc: bool = False
    """Real-time chunking: inpaint each chunk to agree with the actions still queued."""
    steps_ahead: int = 0
    """Request the next chunk this many actions before the queue runs out; 0: from the
    measured round trip."""
    hz: float = 0.0
    """Pace the simulator at this control rate, as a real robot runs (0: as fast as it
    steps). With --lerobot-robot, the robot's control rate (0: the served run's frame rate)."""
    record: bool = True
    """Store the episodes in the served run's dataset (False: only run them)."""
    timeout: float = 30.0
    """Seconds to wait for any reply before the connection counts as lost."""
    attempts: int = 6
    """Connection attempts (with back-off 0.5, 1, 2, ... s) before giving up."""
    lerobot_robot: str | None = None
    """A LeRobot robot plays the robot: its LeRobot config, a .json/.yaml file or
    `type=so101_follower,port=/dev/ttyACM0,id=arm` (the fields of LeRobot's --robot.*
    flags; docs/real-robot.md). Needs lerobot (0.4.4)."""
    lerobot_teleop: str | None = None
    """The person's LeRobot teleoperator (a leader arm), spelled as --lerobot-robot: its
    get_action() is the correction. Takeover, success, failure and re-record come from its
    get_teleop_events() (a gamepad's buttons) and the terminal's keys: space, s, f, r."""

    def validate(self) -> None:
        url = urlparse(self.server)
        require(
            url.scheme in ("ws", "wss") and bool(url.hostname),
            "--server",
            self.server,
            "must be ws://HOST:PORT or wss://HOST:PORT",
        )
        require(
            self.episodes >= 0, "--episodes", self.episodes, "must be >= 0 (0 = the run's rule)"
        )
        require(
            self.steps_ahead >= 0,
            "--steps-ahead",
            self.steps_ahead,
            "must be >= 0 (0 = from the measured latency)",
        )
        require(
            math.isfinite(self.hz) and self.hz >= 0,
            "--hz",
            self.hz,
            "must be a finite rate >= 0 (0 = unpaced)",
        )
        require(
            math.isfinite(self.timeout) and self.timeout > 0,
            "--timeout",
            self.timeout,
            "must be a finite number of seconds > 0",
        )
        require(self.attempts >= 1, "--attempts", self.attempts, "must be >= 1")
        require(
            self.lerobot_robot is not None or self.lerobot_teleop is None,
            "--lerobot-teleop",
            self.lerobot_teleop,
            "needs --lerobot-robot: a LeRobot teleoperator corrects a LeRobot robot",
        )
        require(
            not self.rtc or self.mode == "async",
            "--rtc",
            self.rtc,
            "needs --mode async: synchronous execution has no queued actions to agree with",
        )


def connect(args: RobotArgs) -> Connection:
    """The connection to `--server`, with the token if one is found (module docstring)."""
    token = args.token or os.environ.get("ALOE_TOKEN")
    if token is None and args.token_file is not None:
        try:
            token = read_token_file(args.token_file)
        except (OSError, ValueError) as e:
            raise bad("--token-file", args.token_file, f"cannot read a token: {e}") from None
    conn = _open(args, token)
    local = conn.metadata.get("run_dir")
    if token is None and args.record and isinstance(local, str) and _on_this_machine(args):
        try:
            token = read_token_file(Path(local) / TOKEN_FILE)
        except (OSError, ValueError):
            return conn  # no token here: the server says so if recording needs one
        print(f"aloe robot: using the token in {Path(local) / TOKEN_FILE}", file=sys.stderr)
        conn.close()
        conn = _open(args, token)
    return conn


def _on_this_machine(args: RobotArgs) -> bool:
    return is_loopback(urlparse(args.server).hostname or "")


def _open(args: RobotArgs, token: str | None) -> Connection:
    from aloe.robot.connection import Connection, ServerError  # optional extra: serve

    try:
        return Connection(args.server, token, timeout=args.timeout, attempts=args.attempts)
    except ServerError as e:
        raise bad("--token", "***" if token else None, str(e)) from None
    except ConnectionError as e:
        raise bad("--server", args.server, f"{e}; is `aloe serve` running there?") from None


def cmd_robot(args: RobotArgs) -> int:
    # optional extra: serve (websockets), so that `aloe robot --help` runs without it
    from aloe.robot.client import RobotClient
    from aloe.robot.connection import ServerError

    args.validate()
    devices = None
    if args.lerobot_robot is not None:  # decoded before any connection: errors come first
        from aloe.robot.lerobot_devices import make_devices

        devices = make_devices(args.lerobot_robot, args.lerobot_teleop)
    conn = connect(args)
    meta = conn.metadata
    if "config" not in meta:
        raise bad(
            "--server",
            args.server,
            "is not an `aloe serve` server (no run config in "
            "its metadata); a plain openpi server has no episode recording",
        )
    cfg = TrainConfig.from_json(meta["config"])
    require(
        devices is not None or registry.simulated(cfg.task),
        "--lerobot-robot",
        None,
        f"the served run (--task {cfg.task}) has no simulator to play: give the robot's "
        "LeRobot config",
    )
    client = RobotClient(
        conn, asynchronous=args.mode == "async", rtc=args.rtc, steps_ahead=args.steps_ahead or None
    )
    with ExitStack() as stack:
        env, operator = (
            simulated(cfg, args.hz) if devices is None else lerobot_cell(stack, devices, meta, args)
        )
        try:
            summary = collect(client, env, operator, cfg, args.episodes, record=args.record)
        except (ServerError, ConnectionError) as e:  # after validation: what the server said
            print(f"aloe robot: stopped: {e}", file=sys.stderr)
            return 1
    clock = getattr(env, "clock", None)
    overruns = {"late_steps": clock.overruns} if clock is not None else {}
    print(json.dumps({**summary, **client.timing.summary(), **overruns}, indent=1))
    return 0


def simulated(cfg: TrainConfig, hz: float) -> tuple[EpisodeEnv, Any]:
    """MetaWorld as the robot (paced at `hz`, if given) and the run's simulated operator."""
    env: EpisodeEnv = make_env(cfg.env)
    if hz:
        env = cast(EpisodeEnv, Paced(env, hz))
    return env, make_operator(cfg.task, cfg.operator, seed=cfg.seed)


def lerobot_cell(
    stack: ExitStack, devices: tuple[Any, Any], meta: dict[str, Any], args: RobotArgs
) -> tuple[EpisodeEnv, Any]:
    """The LeRobot robot and teleoperator, connected for the stack's block."""
    from aloe.robot.lerobot_devices import cell

    texts = (args.lerobot_robot or "", args.lerobot_teleop or "")
    env, person = stack.enter_context(cell(*devices, meta, hz=args.hz or None, texts=texts))
    return cast(EpisodeEnv, env), person and as_operator(person)


def collect(
    client: RobotClient,
    env: EpisodeEnv,
    operator: Any,
    cfg: Any,
    episodes: int,
    record: bool = True,
) -> dict[str, Any]:
    """Episodes over the network by the run's collection rule (or `episodes` of them); a
    connection lost mid-episode loses that episode, which is played again after reconnecting,
    as is one the person drops (`Rerecord`)."""
    from aloe.robot.connection import ConnectionLost  # optional extra: serve

    meta = client.conn.metadata
    rule = cfg.collect
    iteration = int(meta.get("iteration", 0))
    done = meta.get("collected", {}) if record else {}
    n = int(done.get("episodes", 0))
    successes = int(done.get("successes", 0))
    quota, budget = (
        (math.inf, n + episodes) if episodes else (rule.success_quota, rule.max_episodes)
    )
    takeover = Takeover(rule.handback_steps, rule.operator_max_steps, rule.max_takeovers)
    out: dict[str, Any] = {
        "iteration": iteration,
        "episodes": 0,
        "successes": 0,
        "takeovers": 0,
        "stored": [],
        "robot_s": 0.0,
        "lost": 0,
    }
    while successes < quota and n < budget:
        seed = episode_seed(int(meta.get("seed", 0)), iteration, n)
        if not client.conn.connected:  # the server closed an idle connection between episodes
            client.conn.connect()
        try:
            played = client.episode(env, seed, operator=operator, takeover=takeover, record=record)
        except (ConnectionLost, TimeoutError) as e:
            out["lost"] += 1
            print(f"aloe robot: episode of seed {seed} lost ({e}); reconnecting", file=sys.stderr)
            client.conn.connect()
            continue
        except Rerecord as e:
            print(f"aloe robot: episode of seed {seed} dropped ({e}); again", file=sys.stderr)
            continue
        n, successes = n + 1, successes + int(played.counts.success)
        out["episodes"] += 1
        out["successes"] += int(played.counts.success)
        out["takeovers"] += played.counts.takeovers
        out["robot_s"] += played.wall_s
        if played.episode_index is not None:
            out["stored"].append(played.episode_index)
    return out
