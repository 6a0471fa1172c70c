"""config.json, read and written: the legacy-key mapping, the JSON -> dataclass conversion and
the type checks every config field gets (`aloe.config.TrainConfig.from_json`, `to_json`,
`validate`). Nothing here knows TrainConfig's fields; it is handed the class."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from aloe.errors import UsageError, bad, require

FIELD = "config field "  # how a run's fields are named in messages: `config field aloe.beta`
# float fields whose docstring gives inf a meaning; every other float must be finite
MAY_BE_INFINITE = frozenset({"optim.q_abs_max", "critic.z_clip"})
# config.json keys of configs saved before the algorithms owned their settings (a config
# without an `optim` group) -> the fields that now hold each value
LEGACY_KEYS = {
    "aloe.gamma": ("optim.gamma",),
    "aloe.batch_size": ("optim.batch_size",),
    "aloe.critic_lr": ("optim.critic_lr",),
    "aloe.actor_lr": ("optim.actor_lr",),
    "aloe.weight_decay": ("optim.weight_decay",),
    "aloe.adam_betas": ("optim.adam_betas",),
    "aloe.grad_clip": ("optim.grad_clip",),
    "aloe.warmup_steps": ("optim.warmup_steps",),
    "aloe.decay_steps": ("optim.decay_steps",),
    "aloe.min_lr_ratio": ("optim.min_lr_ratio",),
    "aloe.q_abs_max": ("optim.q_abs_max",),
    "aloe.seed": ("optim.seed",),
    "aloe.actor_steps": ("aloe.actor_steps", "dagger.steps"),  # HG-DAgger's steps were ALOE's
}
# config.json keys of removed fields -> the value that computes what the code does now. A
# config holding another value loads with a one-line notice and the field dropped (not
# refused: earlier runs must stay readable by `aloe report` and `load_run`).
# aloe.value_flow_steps: fewer Euler steps for a' (Eq. 7) and V^π (Eq. 10) than π's own
# were not samples of π (issue 32); the update now always samples π as it acts.
DROPPED_KEYS: dict[str, Any] = {"aloe.value_flow_steps": 0}
# Upper bounds. Any integer field: no count of a run comes near 10^9, and the fields end up
# in int64 columns and products (an episode seed is seed * 1 000 003 + k * 10 000 + i).
MAX_INT = 10**9


def parse(cls: Any, text: str) -> Any:
    """config.json's text -> a validated `cls` (`aloe.config.TrainConfig.from_json`): today's
    keys from an older version's (`_upgrade`), then the checks the flags get, then that the
    shared fields agree as `resolved` left them."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(
            f"not valid JSON at line {e.lineno} column {e.colno} ({e.msg}); fix "
            "the file or restore it"
        ) from None
    require(
        isinstance(data, dict),
        "config",
        type(data).__name__,
        "must be a JSON object of config fields",
    )
    legacy = _upgrade(data)
    cfg = _from_dict(cls, data, "")
    cfg.validate()
    for name, value in legacy.items():  # copies `resolved` made of the one horizon
        require(
            value == cfg.horizon,
            f"{FIELD}{name}",
            value,
            f"must be {cfg.horizon!r}, the run's horizon",
        )
    want = flat_fields(dataclasses.asdict(cfg.resolved()))
    for name, value in flat_fields(dataclasses.asdict(cfg)).items():  # as `resolved` left them
        require(
            value == want[name],
            f"{FIELD}{name}",
            value,
            f"must be {want[name]!r}, the value the run's shared fields give it",
        )
    return cfg


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A config.json of an older version as today's, in place: its `out` dropped (written
    before runs were relocatable; the location is run_dir), its `LEGACY_KEYS` moved, and its
    `actor.horizon` and `critic.horizon` (written before the chunk length became one field,
    `horizon`) taken out and returned, for the caller to check that they equal it."""
    data.pop("out", None)
    for key, same in DROPPED_KEYS.items():
        value = _pop(data, key)
        if value is not _MISSING and value != same:
            print(f"notice: config field {key} ({value}) was removed; ignored", file=sys.stderr)
    if "optim" not in data:
        old = {key: _pop(data, key) for key in LEGACY_KEYS}
        for key, value in old.items():
            for new in LEGACY_KEYS[key] if value is not _MISSING else ():
                _put(data, new, value)
    return {
        f"{part}.horizon": data[part].pop("horizon")
        for part in ("actor", "critic")
        if isinstance(data.get(part), dict) and "horizon" in data[part]
    }


_MISSING = object()


def _pop(data: dict[str, Any], dotted: str) -> Any:
    group, _, name = dotted.partition(".")
    part = data.get(group)
    return part.pop(name, _MISSING) if isinstance(part, dict) else _MISSING


def _put(data: dict[str, Any], dotted: str, value: Any) -> None:
    group, _, name = dotted.partition(".")
    data.setdefault(group, {})[name] = value


def _from_dict(cls: Any, data: dict[str, Any], path: str) -> Any:
    """JSON values -> the dataclass, converted where JSON has no type of its own (a path, a
    tuple, a float written as an int or as "inf"); `check_types` then judges the rest."""
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        close = difflib.get_close_matches(key, hints, n=1)
        require(
            key in hints,
            f"{FIELD}{path}{key}",
            allowed=f"unknown field{f' (did you mean {close[0]}?)' if close else ''}",
        )
        kwargs[key] = _from_json_value(value, hints[key], f"{path}{key}")
    return cls(**kwargs)


def _from_json_value(value: Any, hint: Any, name: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _from_dict(hint, value, f"{name}.")
    if (hint is Path or Path in get_args(hint)) and isinstance(value, str):
        return Path(value)
    takes_float = hint is float or float in get_args(hint)
    if takes_float and (_is_int(value) or value in ("inf", "-inf", "nan")):
        return float(value)
    if get_origin(hint) is tuple and isinstance(value, list):
        args = get_args(hint)
        items = [args[0]] * len(value) if args[-1:] == (Ellipsis,) else list(args)
        if len(items) == len(value):
            return tuple(_from_json_value(v, a, name) for v, a in zip(value, items, strict=True))
    return value


def check_types(obj: Any, path: str = "") -> None:
    """Every field of a config (and of its sub-configs) holds a value of its annotated type;
    bool is not an int, an int is a float, and a float is finite unless MAY_BE_INFINITE."""
    hints = get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        name = f"{path}{f.name}"
        value = getattr(obj, f.name)
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            require(isinstance(value, hint), f"{FIELD}{name}", value, "must be an object of fields")
            check_types(value, f"{name}.")
            continue
        inf_ok = name in MAY_BE_INFINITE
        require(
            _fits(value, hint, inf_ok),
            f"{FIELD}{name}",
            value,
            f"must be {_describe(hint, inf_ok)}",
        )
        if _is_int(value) and abs(value) > MAX_INT:
            bound = f"<= {MAX_INT}" if value > 0 else f">= -{MAX_INT}"
            raise bad(f"{FIELD}{name}", value, f"must be {bound} (no count of a run comes near it)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fits(value: Any, hint: Any, inf_ok: bool) -> bool:
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is Literal:
        return isinstance(value, str) and value in args
    if origin in (Union, UnionType):
        return any(_fits(value, a, inf_ok) for a in args)
    if origin is tuple:
        items = [args[0]] * len(value) if args[-1:] == (Ellipsis,) else list(args)
        return (
            isinstance(value, tuple)
            and len(items) == len(value)
            and all(_fits(v, a, inf_ok) for v, a in zip(value, items, strict=True))
        )
    if hint is float:
        finite = _is_int(value) or (isinstance(value, float) and math.isfinite(value))
        return finite or (inf_ok and isinstance(value, float) and math.isinf(value))
    if hint is int:
        return _is_int(value)
    if hint in (bool, str, Path, NoneType):
        return isinstance(value, hint)
    raise TypeError(f"check_types: no rule for the annotation {hint!r}")


def _describe(hint: Any, inf_ok: bool = False, plural: bool = False) -> str:
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (Union, UnionType):
        return " or ".join(_describe(a, inf_ok, plural) for a in args)
    if origin is tuple:
        if args[-1:] == (Ellipsis,):
            return f"a list of {_describe(args[0], inf_ok, plural=True)}"
        return f"a list of {len(args)} {_describe(args[0], inf_ok, plural=True)}"
    number = "number" if inf_ok else "finite number"
    names = {
        bool: ("true or false", "booleans"),
        int: ("an integer", "integers"),
        float: (f"a {number}", f"{number}s"),
        str: ("a string", "strings"),
        Path: ("a path", "paths"),
        NoneType: ("None", "None"),
    }
    return names[hint][plural]


def flat_fields(d: dict[str, Any], path: str = "") -> dict[str, Any]:
    """A nested config dict as {"group.field": value}."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flat_fields(value, f"{path}{key}."))
        else:
            out[f"{path}{key}"] = value
    return out


def jsonable(obj: Any) -> Any:
    """A config's `dataclasses.asdict` as JSON values: paths as strings, inf as "inf"."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # "inf", read back by `_from_json_value`; JSON has no infinity
    return obj
