"""`--help`: every sub-command with an example, `--resume`, and the shared progress flags."""

from __future__ import annotations

import importlib.util

import pytest

from aloe.cli import COMMANDS, main, usage

LONG = ("train", "eval", "collect", "compare", "bench")  # the commands with progress flags


def test_top_level_help_lists_every_command_with_an_example_and_resume():
    text = usage()
    for name, command in COMMANDS.items():
        assert f"  {name:10s} {command.summary}" in text
        assert f"$ {command.example}" in text and command.example.startswith(f"aloe {name}")
    assert "aloe train --resume DIR" in text and "--progress/--no-progress" in text


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "name",
    [n for n in COMMANDS if n not in ("serve", "robot") or importlib.util.find_spec("websockets")],
)
def test_each_command_help_ends_with_its_example(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _help(capsys, name)
    assert out.rstrip().endswith(f"example:\n  {COMMANDS[name].example}")
    assert ("--progress, --no-progress" in out) == (name in LONG), out
    assert not any(tmp_path.iterdir())


def test_dataset_help_shows_the_info_check_or_inspect_choice(capsys):
    for argv in (["dataset"], ["dataset", "check"], ["dataset", "info", "some/store"]):
        assert "usage: aloe dataset [-h] [OPTIONS] {info,check,inspect} PATH" in _help(
            capsys, *argv
        )


def test_train_help_shows_resume(capsys):
    assert "aloe train --resume DIR [--device D] [--progress | --no-progress]" in _help(
        capsys, "train"
    )


@pytest.mark.parametrize(
    "algo, shown, hidden",
    [
        ("aloe", ["--aloe.", "--optim.", "--critic.num-q"], ["--awr.", "--dagger.", "--ppo."]),
        ("awr", ["--awr.", "--optim.", "--critic."], ["--aloe.", "--critic.num-q", "--ppo."]),
        ("dagger", ["--dagger.steps", "--optim.actor-lr"], ["--aloe.", "--critic.", "--awr."]),
        ("bc", ["--optim.batch-size"], ["--optim.critic-lr", "--critic.", "--dagger.", "--aloe."]),
        ("ppo-sbc", ["--ppo.", "--optim.critic-lr"], ["--aloe.", "--awr.", "--critic.num-q"]),
    ],
)
def test_train_help_shows_only_the_options_of_the_algorithm(capsys, algo, shown, hidden):
    """`aloe train --algo A --help`: the shared groups and A's own, not the other
    algorithms' nor the shared fields A never reads (its row's `ignores`)."""
    text = _help(capsys, "train", "--algo", algo)
    assert f"(default: {algo})" in text
    for flag in shown:
        assert flag in text, flag
    for flag in hidden:
        assert flag not in text, flag
