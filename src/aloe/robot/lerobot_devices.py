"""`aloe robot --lerobot-robot CONFIG [--lerobot-teleop CONFIG]`: LeRobot devices from configs.

CONFIG is the device's LeRobot config, spelled one of two ways:

- a JSON or YAML file (`.json`, `.yaml`, `.yml`) of the fields LeRobot's `--robot.*` (or
  `--teleop.*`) flags set, `type` among them:

      type: so101_follower
      port: /dev/ttyACM0
      id: my_follower
      cameras: {front: {type: opencv, index_or_path: 0, width: 640, height: 480, fps: 30}}

- `key=value` pairs joined by commas, the same flags without their `--robot.` prefix:
  `type=so101_follower,port=/dev/ttyACM0,id=my_follower`. A value in braces or brackets
  is YAML, commas and all: `cameras={front: {type: opencv, index_or_path: 0, ...}}`.

LeRobot's draccus decodes it against `RobotConfig` / `TeleoperatorConfig` once every device
type lerobot ships, and every installed plugin (`lerobot_robot_*`, `lerobot_teleoperator_*`,
`lerobot_camera_*`), has registered itself; LeRobot's `make_robot_from_config` /
`make_teleoperator_from_config` then make the device. Nothing is connected until the served
run has been checked against the robot (`aloe.robot.lerobot_env.served_env`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import pkgutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aloe.errors import UsageError, bad
from aloe.extras import require_extra
from aloe.robot.lerobot_env import (
    LeRobotEnv,
    LeRobotTeleop,
    Marks,
    either,
    key_marks,
    marks_of_teleop,
    served_env,
)
from aloe.robot.teleop import Teleop, terminal_keys

FILES = (".json", ".yaml", ".yml")
KINDS = {  # flag -> (LeRobot package, config class, factory)
    "--lerobot-robot": ("lerobot.robots", "RobotConfig", "make_robot_from_config"),
    "--lerobot-teleop": (
        "lerobot.teleoperators",
        "TeleoperatorConfig",
        "make_teleoperator_from_config",
    ),
}


def read_config(flag: str, text: str) -> dict[str, Any]:
    """CONFIG as a dict (the module docstring's two spellings)."""
    import yaml  # lerobot's dependency (draccus reads YAML)

    if text.lower().endswith(FILES):
        path = Path(text)
        try:
            raw = path.read_text()
            fields = json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
        except (OSError, ValueError, yaml.YAMLError) as e:
            reason = " ".join(f"{type(e).__name__}: {e}".split())
            raise bad(flag, text, f"cannot read the config: {reason}") from None
        if not isinstance(fields, dict):
            raise bad(flag, text, "must hold a mapping of the device's fields, `type` among them")
        return fields
    fields = {}
    for pair in split_pairs(text):
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise bad(flag, text, f"{pair!r} is not key=value (or give a .json/.yaml file)")
        fields[key.strip()] = flow_value(flag, text, value.strip())
    return fields


def split_pairs(text: str) -> list[str]:
    """`a=1,b={x: 1, y: 2}` -> ['a=1', 'b={x: 1, y: 2}']: commas inside brackets stay."""
    pairs, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "{[") - (ch in "}]")
        if ch == "," and depth == 0:
            pairs.append(text[start:i])
            start = i + 1
    pairs.append(text[start:])
    return [p for p in pairs if p.strip()]


def flow_value(flag: str, text: str, value: str) -> Any:
    """A value in braces or brackets parsed as YAML; any other stays a string, which draccus
    decodes to the field's type (so that `id=007` stays the string '007')."""
    import yaml

    if not value.startswith(("{", "[")):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise bad(flag, text, f"{value[:60]!r} is not YAML: {' '.join(str(e).split())}") from None


def register_devices() -> None:
    """Import every device, camera and plugin lerobot knows, so that each registers its
    config type (a device whose own dependency is missing is left out)."""
    from lerobot.utils.import_utils import register_third_party_plugins

    for name in ("lerobot.cameras", "lerobot.robots", "lerobot.teleoperators"):
        package = importlib.import_module(name)
        for module in pkgutil.iter_modules(package.__path__):
            if module.ispkg:
                with contextlib.suppress(Exception):
                    importlib.import_module(f"{name}.{module.name}")
    register_third_party_plugins()


def make_device(flag: str, text: str) -> Any:
    """The LeRobot device that CONFIG `text` of `flag` describes, not connected."""
    import draccus

    package, config_class, factory = KINDS[flag]
    fields = read_config(flag, text)
    module = importlib.import_module(package)
    base = getattr(module, config_class)
    known = sorted(base.get_known_choices())
    kind = fields.get("type")
    if kind not in known:
        what = "no `type`" if kind is None else f"lerobot has no {kind!r} here"
        raise bad(flag, text, f"{what}; its types: {', '.join(known)}")
    try:
        config = draccus.decode(base, fields)
    except Exception as e:  # draccus's DecodingError / ParsingError: one line of its text
        raise bad(flag, text, " ".join(str(e).split())) from None
    try:
        return getattr(module, factory)(config)
    except ImportError as e:  # a motor bus's SDK: lerobot's extra of the device
        raise bad(
            flag, text, f"LeRobot cannot make it: {e} (install lerobot's extra for it)"
        ) from None
    except (ValueError, TypeError, OSError) as e:
        raise bad(flag, text, f"LeRobot cannot make it: {' '.join(str(e).split())}") from None


def make_devices(robot: str, teleop: str | None) -> tuple[Any, Any]:
    """`--lerobot-robot` and `--lerobot-teleop` as LeRobot devices (checked before any work:
    lerobot installed, the configs decoded)."""
    require_extra("lerobot")
    register_devices()
    return make_device("--lerobot-robot", robot), teleop and make_device("--lerobot-teleop", teleop)


@contextlib.contextmanager
def cell(
    robot: Any, teleop: Any, meta: dict[str, Any], *, hz: float | None, texts: tuple[str, str]
) -> Iterator[tuple[LeRobotEnv, Teleop | None]]:
    """The robot as the served run's environment and the teleoperator as the person, both
    connected for the block and disconnected after it, the terminal in cbreak mode where
    its keys mark the episodes. `texts`: the two CONFIGs as given, for the errors."""
    keys = sys.stdin.isatty()
    sources = [marks_of_teleop(teleop)] if hasattr(teleop, "get_teleop_events") else []
    sources += [key_marks()] if keys else []

    def marks() -> Marks:
        return either(Marks(), *(poll() for poll in sources))

    try:
        env = served_env(robot, meta, marks=marks, hz=hz, ready=ready_key if keys else None)
    except UsageError as e:
        raise bad("--lerobot-robot", texts[0], str(e)) from None
    try:
        person = LeRobotTeleop(teleop, env) if teleop is not None else None
    except UsageError as e:
        raise bad("--lerobot-teleop", texts[1], str(e)) from None
    if not sources:
        print(
            "aloe robot: no takeover or outcome marks (no teleop events, stdin is no "
            "terminal): each episode runs to its time limit",
            file=sys.stderr,
        )
    with contextlib.ExitStack() as stack:
        for flag, text, device in zip(KINDS, texts, (robot, teleop), strict=True):
            if device is not None:
                try:
                    device.connect()
                except Exception as e:  # a port, a camera, a calibration: LeRobot's words
                    raise bad(flag, text, f"cannot connect: {' '.join(str(e).split())}") from None
                stack.callback(device.disconnect)
        if keys:
            stack.enter_context(cbreak())
        yield env, person


def ready_key(seed: int) -> None:
    """Wait for Enter: the person has set the scene for the episode of `seed`."""
    print(f"aloe robot: set the scene, then press Enter (episode seed {seed})", file=sys.stderr)
    while "\n" not in terminal_keys():
        time.sleep(0.05)


@contextlib.contextmanager
def cbreak() -> Iterator[None]:
    """The terminal hands over each key as it is typed, restored after the block (POSIX)."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
