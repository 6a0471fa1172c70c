"""A sub-command's arguments, parsed by tyro, with its parse errors as one-line UsageErrors.

tyro reports a bad argument in a box of a dozen lines; `aloe` reports every user's mistake
the same way, `aloe CMD: error: <what> (<the value>): <what is allowed>`. `parse` runs
`tyro.cli` quietly (`console_outputs=False`, its stderr held back); when tyro refuses the
command line, `diagnose` reads it again against the arguments tyro makes of the dataclass
(its flags and positionals, each value converted as tyro converts it, through
`tyro.constructors`) and names the first mistake: an unknown flag (with the nearest flags),
a flag without its value, a value that is not of its type or not one of its choices, a
required argument left out. `--help` is not an error: tyro prints the full help and exits 0.

A dataclass read here checks its values after parsing (a `validate()`), not while it is
built: tyro would report a ValueError raised in `__post_init__` in its own box.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import re
import sys
import types
import typing
from typing import Any

import tyro
from tyro.constructors import ConstructorRegistry, PrimitiveConstructorSpec, PrimitiveTypeInfo

from aloe.errors import UsageError, bad


def parse(arg_type: Any, argv: list[str], prog: str, **kw: Any) -> Any:
    """`tyro.cli(arg_type, args=argv, prog=prog, **kw)`, a parse error raised as UsageError.

    With `return_unknown_args=True` (and `add_help=False`), the flags it does not know and
    their values are returned, as tyro returns them, not refused."""
    if kw.get("add_help", True) and ("-h" in argv or "--help" in argv):
        return tyro.cli(arg_type, args=argv, prog=prog, **kw)  # prints the help; exits 0
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):  # tyro boxes some errors even when quiet
            result = tyro.cli(arg_type, args=argv, prog=prog, console_outputs=False, **kw)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        unknown_ok = bool(kw.get("return_unknown_args"))
        problem = diagnose(arg_type, argv, prog, all_default="default" in kw, unknown_ok=unknown_ok)
        raise UsageError(problem or _unexplained(argv, prog, held.getvalue())) from None
    sys.stderr.write(held.getvalue())  # a warning tyro gave on the way is still shown
    return result


@dataclasses.dataclass(frozen=True)
class Argument:
    """One argument tyro makes of a dataclass field."""

    name: str
    """How a message names it: `--episodes`, or a positional's metavar (`ROOT`)."""
    flags: tuple[str, ...]
    """Its spellings, `-o`, `--out`, `--no-progress`; none for a positional."""
    spec: PrimitiveConstructorSpec[Any] | None
    """How tyro converts its value(s); None for a --flag/--no-flag pair, which takes none."""
    required: bool


def arguments(arg_type: Any, all_default: bool = False) -> list[Argument]:
    """The arguments tyro makes of the dataclass `arg_type`: `--name`, `--no-name` for a
    bool, `--sub.name` for a nested dataclass's field; a Suppress-ed field makes none.
    `all_default`: a default instance is given, so that nothing is required."""
    return list(_arguments(arg_type, "", all_default))


def _arguments(cls: Any, prefix: str, all_default: bool) -> typing.Iterator[Argument]:
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = dataclasses.fields(cls)
    except (NameError, TypeError):  # not a dataclass of resolvable types: none known
        return
    for f in fields:
        hint = hints[f.name]
        base: Any = hint
        markers: tuple[Any, ...] = ()
        if typing.get_origin(hint) is typing.Annotated:
            base, markers = hint.__origin__, hint.__metadata__
        if any(m is tyro.conf.Suppress or m is tyro.conf.SuppressFixed for m in markers):
            continue
        name = prefix + f.name.replace("_", "-")
        if dataclasses.is_dataclass(base):
            yield from _arguments(base, f"{name}.", all_default)
            continue
        has_default = all_default or not (
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        if any(m is tyro.conf.Positional for m in markers):
            yield Argument(f.name.upper(), (), _spec(hint), not has_default)
            continue
        flag = "--" + name
        for m in markers:  # tyro.conf.arg(name=..., aliases=...)
            if getattr(m, "name", None):
                flag = "--" + prefix + str(m.name).replace("_", "-")
        aliases = tuple(a for m in markers for a in getattr(m, "aliases", None) or ())
        if has_default and _is_flag_pair(base, markers):
            left, dot, right = flag.rpartition(".")
            negation = f"{left}.no-{right}" if dot else f"--no-{flag[2:]}"
            yield Argument(flag, (*aliases, flag, negation), None, False)
        else:
            yield Argument(flag, (*aliases, flag), _spec(hint), not has_default)


def _is_flag_pair(base: Any, markers: tuple[Any, ...]) -> bool:
    """A bool, or `DisallowNone[bool | None]` (aloe.progress.Progress): --flag / --no-flag."""
    if base is bool:
        return True
    none_or_bool = typing.get_origin(base) in (typing.Union, types.UnionType) and set(
        typing.get_args(base)
    ) == {bool, type(None)}
    return none_or_bool and any(m is tyro.conf.DisallowNone for m in markers)


def _spec(hint: Any) -> PrimitiveConstructorSpec[Any] | None:
    spec = ConstructorRegistry.get_primitive_spec(PrimitiveTypeInfo.make(hint, set()))
    return spec if isinstance(spec, PrimitiveConstructorSpec) else None


def diagnose(
    arg_type: Any,
    argv: list[str],
    prog: str,
    all_default: bool = False,
    unknown_ok: bool = False,
) -> str | None:
    """What is wrong with `argv` as arguments of `arg_type`, worded for the user (the first
    mistake, reading left to right; then what is missing); None if nothing is found.
    `unknown_ok`: flags that are not arguments of `arg_type`, and stray values, are no
    mistake (tyro's `return_unknown_args`)."""
    see = f"see {prog} --help"
    args = arguments(arg_type, all_default)
    by_flag = {flag: a for a in args for flag in a.flags}
    positionals = [a for a in args if not a.flags]
    given: list[Argument] = []
    i, options = 0, True
    while i < len(argv):
        token = argv[i]
        i += 1
        if options and token == "--":
            options = False
            continue
        if options and _is_flag(token):
            key, eq, attached = token.partition("=")
            key = _normal(key)
            arg = by_flag.get(key)
            if arg is None:
                if unknown_ok:
                    continue
                return _unrecognized(token, list(by_flag), see)
            given.append(arg)
            if arg.spec is None:  # --flag / --no-flag
                if eq:
                    return str(bad(key, attached, f"takes no value; {see}"))
                continue
            values = [attached] if eq else []
            most = _most(arg.spec.nargs)
            while i < len(argv) and len(values) < most and _is_value(argv[i], arg.spec):
                values.append(argv[i])
                i += 1
            problem = _check(key, values, arg.spec, see)
            if problem:
                return problem
        elif positionals:
            arg = positionals.pop(0)
            given.append(arg)
            problem = _check(arg.name, [token], arg.spec, see)
            if problem:
                return problem
        elif not unknown_ok:
            return str(bad("unrecognized argument", token, see))
    missing = [a.name for a in args if a.required and a not in given]
    if missing:
        return f"{', '.join(missing)}: required; {see}"
    return None


def _is_flag(token: str) -> bool:
    """An option, not a value: `-o`, `--out`, `--out=x`; `-5`, `-1e3`, `-inf` are values."""
    return token.startswith("-") and len(token) > 1 and not _NEGATIVE.match(token)


_NEGATIVE = re.compile(r"-(\d|\.|(inf|infinity|nan)$)", re.IGNORECASE)


def _is_value(token: str, spec: PrimitiveConstructorSpec[Any]) -> bool:
    return not _is_flag(token) or token in (spec.choices or ())


def _normal(flag: str) -> str:
    """tyro reads `--max_steps` as `--max-steps`: each word's inner underscores as hyphens."""
    if not flag.startswith("--"):
        return flag
    return "--" + ".".join(_hyphens(part) for part in flag[2:].split("."))


def _hyphens(word: str) -> str:
    inner = word.strip("_")
    if not inner:
        return word
    start = word.index(inner)
    return word[:start] + inner.replace("_", "-") + word[start + len(inner) :]


def _most(nargs: Any) -> int | float:
    if nargs == "*":
        return float("inf")
    return max(nargs) if isinstance(nargs, tuple) else int(nargs)


def _least(nargs: Any) -> int:
    if nargs == "*":
        return 0
    return min(nargs) if isinstance(nargs, tuple) else int(nargs)


def _check(
    name: str, values: list[str], spec: PrimitiveConstructorSpec[Any] | None, see: str
) -> str | None:
    """The mistake in `values` given to argument `name`, worded; None if they convert."""
    if spec is None:
        return None
    if len(values) < _least(spec.nargs):
        return f"{name}: needs {expected(spec)}; {see}"
    wrong = [v for v in values if v not in (spec.choices or values)]
    if wrong:
        return str(bad(name, wrong[0], f"one of {', '.join(spec.choices or ())}"))
    try:
        spec.instance_from_str(values)
    except (ValueError, TypeError, IndexError):
        return str(bad(name, " ".join(values), f"expected {expected(spec)}; {see}"))
    return None


_WORDS = {
    "INT": "an integer",
    "FLOAT": "a number",
    "STR": "a string",
    "PATH": "a path",
    "{None}": "None",
    "{True,False}": "True or False",
}


def expected(spec: PrimitiveConstructorSpec[Any]) -> str:
    """tyro's metavar in words: `INT` -> `an integer`, `{None}|INT` -> `None or an integer`."""
    return " or ".join(_WORDS.get(part, part) for part in spec.metavar.split("|"))


def _unrecognized(token: str, flags: list[str], see: str) -> str:
    near = nearest(_normal(token.partition("=")[0]), flags)
    hint = ""
    if near:
        listed = near[0] if len(near) == 1 else f"{', '.join(near[:-1])} or {near[-1]}"
        hint = f"did you mean {listed}? "
    return str(bad("unrecognized argument", token, hint + see))


def nearest(flag: str, flags: list[str]) -> list[str]:
    """The flags `flag` is most likely a misspelling of: the one closest to it, else (up to
    three) those with every word of `flag`, as typed or, if longer than four letters, nearly
    (`--epsiodes`: `--eval-episodes`, ...; `--max-steps`: `--env.max-steps`)."""
    close = difflib.get_close_matches(flag, flags, 1, 0.8)
    if close:
        return close
    typed = _words(flag)
    if not typed:
        return []

    def has_words(candidate: str) -> bool:
        words = _words(candidate)
        return all(w in words or (len(w) > 4 and _close(w, words)) for w in typed)

    found = [
        f for f in flags if has_words(f) and not f.rpartition(".")[2].lstrip("-").startswith("no-")
    ]
    found.sort(key=lambda f: -difflib.SequenceMatcher(None, flag, f).ratio())
    return found[:3]


def _close(word: str, words: list[str]) -> bool:
    return bool(difflib.get_close_matches(word, words, 1, 0.8))


def _words(flag: str) -> list[str]:
    return [w for w in re.split(r"[-_.]+", flag.lstrip("-")) if w]


def _unexplained(argv: list[str], prog: str, box: str) -> str:
    """tyro refused argv for a reason `diagnose` does not see (a ValueError raised while the
    dataclass was built, say): the text of the box it drew, on one line."""
    said: list[str] = []
    for line in box.splitlines():
        text = line.strip(" │╭╮╰╯─")
        if not text or text == "Value error" or "─" in text or text.startswith("For full help"):
            if said:
                break
            continue
        said.append(text)
    reason = re.sub(r"^Error parsing [^:]*: ", "", " ".join(said))
    return reason or f"cannot parse {' '.join(argv)!r}; see {prog} --help"
