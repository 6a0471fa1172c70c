"""One rule for optional extras: a command whose extra is missing says in one line which to
install, `--help` works without it, and `aloe tasks` names the simulators it would add.

A missing extra is simulated by hiding its modules from `importlib.util.find_spec` (what
every check asks) or, for imports, by a `None` entry in `sys.modules`."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from aloe.cli import main
from aloe.extras import EXTRAS, extra_of, install_hint

REAL_FIND_SPEC = importlib.util.find_spec


def hide(monkeypatch: pytest.MonkeyPatch, *extras: str) -> None:
    """Make the modules of `extras` look uninstalled to find_spec."""
    hidden = {m for e in extras for m in EXTRAS[e]}

    def find_spec(name: str, *args, **kwargs):
        if name.split(".")[0] in hidden:
            return None
        return REAL_FIND_SPEC(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize(
    ("extra", "argv"),
    [
        ("serve", ["serve", "--run", "runs/nowhere"]),
        ("serve", ["robot", "--episodes", "1"]),
        ("lerobot", ["robot", "--lerobot-robot", "type=so101_follower,port=/dev/ttyACM0"]),
        ("ray", ["train", "--preset", "smoke", "--workers", "2", "--out", "OUT"]),
        ("ogbench", ["train", "--preset", "smoke", "--task", "cube-double", "--out", "OUT"]),
        ("vision", ["train", "--preset", "smoke", "--obs", "image", "--out", "OUT"]),
        ("ray", ["compare", "--preset", "smoke", "--backend", "ray", "--out", "OUT"]),
    ],
)
def test_a_command_without_its_extra_says_which_to_install_in_one_line(
    extra, argv, monkeypatch, capsys, tmp_path
):
    hide(monkeypatch, extra)
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"aloe {argv[0]}: error: "), err
    assert f"pip install 'aloe[{extra}]'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["serve", "robot"])
def test_help_works_without_the_extra(command):
    """In a fresh process whose websockets and msgpack cannot be imported."""
    code = (
        "import sys; sys.modules['websockets'] = None; sys.modules['msgpack'] = None\n"
        "from aloe.cli import main\n"
        f"sys.exit(main([{command!r}, '--help']))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"usage: aloe {command}" in res.stdout and "Traceback" not in res.stderr


def test_an_import_of_a_missing_module_names_its_extra():
    try:
        import websockets.asyncio_not_there  # type: ignore[import-not-found]  # noqa: F401
    except ModuleNotFoundError as e:
        assert extra_of(e) == "serve"
    assert extra_of(ModuleNotFoundError("x", name="numpy")) is None
    assert install_hint("serve") == "pip install 'aloe[serve]'"


def test_tasks_lists_the_simulators_not_installed_with_their_extra(monkeypatch, capsys):
    from aloe.envs.ogbench_tasks import TASKS

    hide(monkeypatch, "ogbench")
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line and line[0] != "n"]
    assert not set(TASKS) & set(listed) and "pick-place-v3" in listed
    assert out.splitlines()[-1] == (
        f"not installed: {len(TASKS)} ogbench tasks ({', '.join(sorted(TASKS))}); "
        "pip install 'aloe[ogbench]' adds them"
    )
