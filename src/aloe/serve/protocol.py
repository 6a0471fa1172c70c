"""The messages of `aloe serve`: openpi's inference exchange, and aloe's recording extension.

Every message is one binary websocket frame holding a msgpack map (`aloe.serve.wire`); the
server answers each one, in order, with exactly one reply. On connect the server first sends
its metadata (`metadata`). Then:

- **infer** (a map without `type`, as openpi clients send it, or `type: "infer"`):
  `observation.state` float (S,), `observation.images.<camera>` uint8 (H, W, 3) for each of
  the run's cameras, `prompt` (or LeRobot's `task`) the instruction; optionally
  `rtc.prefix` float (L, A), the actions of the previous chunk still to run from this
  observation on, and `rtc.delay` d <= L, how many of them will run before the new chunk
  can (real-time chunking: the chunk is inpainted to agree with them). Reply: `actions`
  float32 (h, A), `policy_version`, `server_timing` {`infer_ms`}.
- **episode_start**: `instruction`, `seed` (int or nil), `record` (default true). Reseeds
  this connection's sampling exactly as in-process collection reseeds an episode, pins the
  policy version for the episode, and (with `record`) opens its recording. Recording needs
  the token, one of the run's instructions and a seed the run assigns that no stored or
  open episode has (nil: the server assigns the iteration's next free one).
  Reply `{type: "episode", policy_version, iteration, seed}`.
- **step**: one executed step: `observation.state`, `observation.images.<camera>`,
  `action` (A,), `next.observation.state`, `source` (policy | human | demo), `outcome`
  ("" | success | failure | truncated), `failure_reason` (with failure), and `sim.state`
  where the run's store records simulator states. Reply `{type: "ok"}`.
- **label**: relabel the last step: `outcome` failure (with `failure_reason`) or truncated.
- **intervention_start**: the operator takes over after the last (policy) step, which is
  labelled a failure with `reason` (Section IV-A); the next steps are the human fragment.
- **intervention_end**: the operator hands back; its last step is labelled truncated (no
  outcome) and the next steps are the policy's.
- **episode_end**: `discard` (default false). Writes the episode to the run's store; reply
  `{type: "stored", episode_index, length, success}` (or `{type: "discarded"}`).

An error reply is a text frame `<code>: <message>` (openpi's clients raise it as an error):
codes `bad_message` (not a bounded msgpack map), `bad_request` (a field is wrong; the
message was ignored and the connection stays usable), `deadline` (the work took longer than
the server's deadline), `unauthorized` (recording without the token), `refused` (the
episode breaks `aloe.serve.rules` or the connection's memory cap), `internal` (a bug: the
server logs its traceback and goes on). A refused recording report (`bad_request` or
`refused`) discards the open episode whole: nothing of it is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from aloe import data as D

PROTOCOL = 1
TYPES = (
    "infer",
    "episode_start",
    "step",
    "label",
    "intervention_start",
    "intervention_end",
    "episode_end",
)
SOURCES = ("policy", "human", "demo")
OUTCOMES = ("", "success", "failure", "truncated")
STATE = D.STATE
NEXT_STATE = D.NEXT_STATE
ACTION = D.ACTION
SIM = D.SIM_STATE
RTC_PREFIX = "rtc.prefix"
RTC_DELAY = "rtc.delay"
MAX_ABS = 1e6  # no state or action of a real robot is larger; bigger numbers are garbage
FLOAT = "f"  # dtype kinds accepted for float fields (f2/f4/f8, converted)


class ProtocolError(ValueError):
    """A message the server refuses; `code` is the error reply's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def refuse(message: str) -> ProtocolError:
    return ProtocolError("bad_request", message)


def error_text(code: str, message: str) -> str:
    """The text frame of an error reply."""
    return f"{code}: {message}"


@dataclass(frozen=True)
class Spec:
    """What the served run reads and writes: the shapes every message is checked against."""

    state_dim: int
    action_dim: int
    horizon: int
    cameras: dict[str, tuple[int, int]]  # camera -> (height, width)
    instructions: tuple[str, ...]  # the run's tasks' instructions
    sim_state_dim: int | None  # the store records sim.state per step (MetaWorld) or not


class StepReport(NamedTuple):
    obs: dict[str, Any]  # state, instruction, images
    action: np.ndarray
    next_state: np.ndarray
    source: str
    outcome: str
    reason: str
    sim_state: np.ndarray | None


def kind(msg: dict[str, Any]) -> str:
    """The message's type; openpi's observation maps have none: they are inference requests."""
    t = msg.get("type", "infer")
    if t not in TYPES:
        raise refuse(f"unknown message type {str(t)[:40]!r}; one of {', '.join(TYPES)}")
    return str(t)


def array(
    msg: dict[str, Any],
    key: str,
    shape: tuple[int, ...],
    kinds: str = FLOAT,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Field `key`: an array of `shape` (-1: any length) and a dtype kind in `kinds`, finite."""
    x = msg.get(key)
    if not isinstance(x, np.ndarray):
        raise refuse(f"{key}: missing or not a numpy array")
    if x.dtype.kind not in kinds or (dtype is np.uint8 and x.dtype != np.uint8):
        wanted = "uint8" if dtype is np.uint8 else "float16, float32 or float64"
        raise refuse(f"{key}: dtype {x.dtype}, expected {wanted}")
    want = all(w in (-1, n) for w, n in zip(shape, x.shape, strict=False))
    if x.ndim != len(shape) or not want:
        raise refuse(
            f"{key}: shape {x.shape}, expected {tuple('n' if w < 0 else w for w in shape)}"
        )
    if kinds == FLOAT and not (np.isfinite(x).all() and (np.abs(x) <= MAX_ABS).all()):
        raise refuse(f"{key}: values must be finite and at most {MAX_ABS:g} in size")
    return x.astype(dtype, copy=False)


def text(
    msg: dict[str, Any],
    key: str,
    default: str | None = None,
    choices: tuple[str, ...] | None = None,
) -> str:
    value = msg.get(key, default)
    if not isinstance(value, str):
        raise refuse(f"{key}: missing or not a string")
    if choices is not None and value not in choices:
        raise refuse(f"{key} ({value[:40]!r}): one of {', '.join(map(repr, choices))}")
    return value


def integer(msg: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    value = msg.get(key, default)
    if isinstance(value, np.integer):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise refuse(f"{key}: must be an integer in {lo}..{hi}")
    return value


def flag(msg: dict[str, Any], key: str, default: bool) -> bool:
    value = msg.get(key, default)
    if not isinstance(value, bool | np.bool_):
        raise refuse(f"{key}: must be true or false")
    return bool(value)


def read_instruction(msg: dict[str, Any], spec: Spec, keys: tuple[str, ...]) -> str:
    """The first of `keys` present; a single-task run needs none (it has one instruction)."""
    for key in keys:
        if key in msg:
            value = text(msg, key)
            if len(spec.instructions) > 1 and value not in spec.instructions:
                raise refuse(
                    f"{key} ({value[:60]!r}): not one of this run's instructions "
                    f"{list(spec.instructions)}"
                )
            return value
    if len(spec.instructions) > 1:
        raise refuse(f"{' or '.join(keys)}: required, this run serves several tasks")
    return spec.instructions[0]


def observation(msg: dict[str, Any], spec: Spec, instruction: str) -> dict[str, Any]:
    """The environment observation a policy reads: state, instruction, camera images."""
    obs: dict[str, Any] = {
        "state": array(msg, STATE, (spec.state_dim,)),
        "instruction": instruction,
    }
    if spec.cameras:
        obs["images"] = {
            c: array(msg, D.image_key(c), (h, w, 3), "u", np.uint8)
            for c, (h, w) in spec.cameras.items()
        }
    return obs


def rtc(msg: dict[str, Any], spec: Spec) -> tuple[np.ndarray, int] | None:
    """Real-time chunking's (prefix (L, A), delay d), or None for a plain chunk."""
    if RTC_PREFIX not in msg:
        return None
    prefix = array(msg, RTC_PREFIX, (-1, spec.action_dim))
    if not 1 <= len(prefix) <= spec.horizon:
        raise refuse(f"{RTC_PREFIX}: 1 to {spec.horizon} actions (the chunk's length)")
    return prefix, integer(msg, RTC_DELAY, 0, len(prefix), default=0)


def episode_seed(msg: dict[str, Any]) -> int | None:
    if msg.get("seed") is None:
        return None
    return integer(msg, "seed", 0, 2**63 - 1)


def step(msg: dict[str, Any], spec: Spec, instruction: str) -> StepReport:
    outcome = text(msg, "outcome", "", OUTCOMES)
    reason = text(msg, "failure_reason", "")
    if (outcome == "failure") != bool(reason):
        raise refuse("failure_reason: required with outcome 'failure', and only with it")
    sim = None
    if spec.sim_state_dim is not None:
        if SIM not in msg:
            raise refuse(
                f"{SIM}: required, this run's store records the simulator state "
                f"({spec.sim_state_dim} values) of every step"
            )
        sim = array(msg, SIM, (spec.sim_state_dim,), dtype=np.float64)
    return StepReport(
        obs=observation(msg, spec, instruction),
        action=array(msg, ACTION, (spec.action_dim,)),
        next_state=array(msg, NEXT_STATE, (spec.state_dim,)),
        source=text(msg, "source", None, SOURCES),
        outcome=outcome,
        reason=reason,
        sim_state=sim,
    )


def label(msg: dict[str, Any]) -> tuple[str, str]:
    outcome = text(msg, "outcome", None, ("failure", "truncated"))
    reason = text(msg, "failure_reason", "")
    if (outcome == "failure") != bool(reason):
        raise refuse("failure_reason: required with outcome 'failure', and only with it")
    return outcome, reason


def metadata(spec: Spec, version: int, extra: dict[str, Any]) -> dict[str, Any]:
    """What the server sends on connect (openpi clients keep it as `get_server_metadata()`)."""
    return {
        "server": "aloe",
        "protocol": PROTOCOL,
        "policy_version": version,
        "state_dim": spec.state_dim,
        "action_dim": spec.action_dim,
        "horizon": spec.horizon,
        "cameras": {c: list(s) for c, s in spec.cameras.items()},
        "instructions": list(spec.instructions),
        "sim_state_dim": spec.sim_state_dim,
        **extra,
    }
