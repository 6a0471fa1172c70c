"""A sub-command's arguments, parsed by tyro, with its parse errors as one-line UsageErrors.

tyro reports a bad argument in a box of a dozen lines; `aloe` reports every user's mistake
the same way, `aloe CMD: error: <what> (<the value>): <what is allowed>`. tyro's parse-error
hook (`tyro._errors`, private in tyro 1.0.17) hands us the failure as an event; we word it
and raise. `--help` is not an error: it still prints the full help and exits 0.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

import tyro

from aloe.errors import UsageError, bad


def parse(arg_type: Any, argv: list[str], prog: str, **kw: Any) -> Any:
    """`tyro.cli(arg_type, args=argv, prog=prog, **kw)`, a parse error raised as UsageError."""
    try:
        from tyro._errors import on_parse_error
    except ImportError:  # a tyro without the hook: its own error box, still exit 2
        return tyro.cli(arg_type, args=argv, prog=prog, **kw)

    def hook(event: Any) -> None:
        raise _ParseError(_message(event, arg_type, argv, prog))

    try:
        with on_parse_error(hook):
            return tyro.cli(arg_type, args=argv, prog=prog, **kw)
    except _ParseError as e:
        raise UsageError(str(e)) from None


class _ParseError(Exception):
    """Raised from the hook; not a ValueError, which tyro would catch and box."""


def _message(event: Any, arg_type: Any, argv: list[str], prog: str) -> str:
    """tyro's failure event as `<what> (<value>): <allowed>`."""
    from tyro import _errors as ev

    see = f"see {prog} --help"
    if isinstance(event, ev.InstantiationFailure) and event.argument is None:
        return str(event.message)  # a ValueError of the arguments' own checks: already worded
    if isinstance(event, ev.InstantiationFailure):
        name = _name(event.argument)
        value = _given(argv, event.argument)
        if value is None:  # a positional: tyro's message quotes the value
            return f"{name}: {event.message}; {see}"
        return str(bad(name, value, f"expected {_expected(event.argument)}; {see}"))
    if isinstance(event, ev.InvalidChoice):
        return str(bad(_name(event.argument), event.value, f"one of {', '.join(event.choices)}"))
    if isinstance(event, ev.UnrecognizedArgs):
        token = next((t for t in event.tokens if t.startswith("-")), event.tokens[0])
        close = difflib.get_close_matches(token.partition("=")[0], _flags(arg_type), 1, 0.8)
        hint = f"did you mean {close[0]}? " if close else ""
        return str(bad("unrecognized argument", token, hint + see))
    if isinstance(event, ev.MissingArgs):
        return f"{', '.join(_name(a.arg) for a in event.missing_arguments)}: required; {see}"
    if isinstance(event, ev.BadValue) and event.offending_value is None:
        return f"{_name(event.argument)}: needs {_expected(event.argument)}; {see}"
    return f"cannot parse {' '.join(argv)!r} ({type(event).__name__}); {see}"


def _name(arg: Any) -> str:
    """`--episodes`, or a positional's name in capitals (`ROOT`), as the usage line shows it."""
    return str(arg.display_name()).upper() if arg.is_positional() else str(arg.display_name())


def _given(argv: list[str], arg: Any) -> str | None:
    """The value given to a flag in argv; the last one wins, as in tyro."""
    flags = {f.replace("_", "-") for f in arg.lowered.name_or_flags if f.startswith("-")}
    nargs = arg.lowered.nargs if isinstance(arg.lowered.nargs, int) else 1
    for i in reversed(range(len(argv))):
        flag, eq, value = argv[i].partition("=")
        if flag.replace("_", "-") in flags:
            return value if eq else " ".join(argv[i + 1 : i + 1 + nargs])
    return None


_WORDS = {
    "INT": "an integer",
    "FLOAT": "a number",
    "STR": "a string",
    "PATH": "a path",
    "{None}": "None",
    "{True,False}": "True or False",
}


def _expected(arg: Any) -> str:
    """tyro's metavar in words: `INT` -> `an integer`, `{None}|INT` -> `None or an integer`."""
    return " or ".join(_WORDS.get(part, part) for part in str(arg.lowered.metavar).split("|"))


def _flags(arg_type: Any, prefix: str = "") -> list[str]:
    """The flags tyro makes of a dataclass (`--name`, `--no-name`, `--sub.name`), to suggest
    the nearest one for a misspelt flag."""
    try:
        hints = typing.get_type_hints(arg_type)
    except (NameError, TypeError):  # not a dataclass of resolvable types: no suggestion
        return []
    flags = []
    for f in dataclasses.fields(arg_type):
        name = f.name.replace("_", "-")
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            flags += _flags(hint, f"{prefix}{name}.")
        else:
            flags += [f"--{prefix}{name}"] + ([f"--{prefix}no-{name}"] if hint is bool else [])
    return flags
