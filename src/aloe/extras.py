"""The optional extras, and the one way a command says that one is missing.

A command that needs an extra checks for it after its arguments are read (so `--help`
always works) and before any work, and refuses with one line:

    aloe serve: error: needs the serve extra: pip install 'aloe[serve]' (websockets,
    msgpack are not installed)

This module imports nothing from aloe but the errors: every layer may use it.
"""

from __future__ import annotations

import importlib.util

from aloe.errors import UsageError

EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("websockets", "msgpack"),
    "ray": ("ray",),
    "ogbench": ("ogbench", "dm_control"),
    "vision": ("transformers", "sentence_transformers"),
    "lerobot": ("lerobot",),
}
"""Each extra of pyproject.toml -> the top-level modules it installs."""


def install_hint(extra: str) -> str:
    """`pip install 'aloe[serve]'`: what brings `extra`."""
    return f"pip install 'aloe[{extra}]'"


def missing(extra: str) -> list[str]:
    """The modules of `extra` that this installation lacks."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def extra_message(extra: str, modules: list[str], what: str = "") -> str:
    """`[what ]needs the serve extra: pip install 'aloe[serve]' (websockets is not
    installed)`; the CLI's error prefix names the command, so it gives no `what`."""
    verb = "is" if len(modules) == 1 else "are"
    return (
        f"{what + ' ' if what else ''}needs the {extra} extra: {install_hint(extra)} "
        f"({', '.join(modules)} {verb} not installed)"
    )


def require_extra(extra: str, what: str = "") -> None:
    """Raise a UsageError naming the extra to install when any of its modules is missing."""
    lacking = missing(extra)
    if lacking:
        raise UsageError(extra_message(extra, lacking, what))


def extra_of(error: ModuleNotFoundError) -> str | None:
    """The extra that installs the module `error` names (`websockets.asyncio` -> serve)."""
    root = (error.name or "").split(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if root in modules), None)
