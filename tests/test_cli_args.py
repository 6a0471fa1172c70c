"""aloe.cli_args: tyro's refusals as one-line UsageErrors, read with tyro's public API only."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pytest
import tyro

import aloe
from aloe.cli import main
from aloe.cli_args import diagnose, nearest, parse
from aloe.cli_runs import _known_args
from aloe.errors import UsageError
from aloe.progress import Progress


@dataclass
class Inner:
    rate: float = 0.5
    mode: Literal["min", "mean"] = "min"


@dataclass
class Args:
    root: tyro.conf.Positional[Path]
    run: Path
    episodes: int = 3
    seed: int | None = None
    out: Annotated[Path, tyro.conf.arg(aliases=["-o"])] = Path("x")
    sizes: tuple[Literal["smoke", "paper"], ...] = ("smoke",)
    span: tuple[float, float] = (0.0, 1.0)
    max_steps: int = 5
    fast: bool = False
    progress: Progress = None
    inner: Inner = field(default_factory=Inner)
    hidden: tyro.conf.Suppress[int] = 0


REFUSED = [
    ("r --run a --episodes abc", "--episodes ('abc'): expected an integer; see prog --help"),
    ("r --run a --episodes=1.5", "--episodes ('1.5'): expected an integer; see prog --help"),
    ("r --run a --seed x", "--seed ('x'): expected None or an integer; see prog --help"),
    ("r --run a --episodes", "--episodes: needs an integer; see prog --help"),
    ("r --run a --episodes --fast", "--episodes: needs an integer; see prog --help"),
    ("r --run a -o", "-o: needs a path; see prog --help"),
    ("r --run a --inner.mode max", "--inner.mode ('max'): one of min, mean"),
    ("r --run a --inner_mode min", "unrecognized argument ('--inner_mode'): did you mean"),
    ("r --run a --inner.rate x", "--inner.rate ('x'): expected a number; see prog --help"),
    ("r --run a --sizes smoke huge", "--sizes ('huge'): one of smoke, paper"),
    ("r --run a --span 1", "--span: needs FLOAT FLOAT; see prog --help"),
    ("r --run a --fast=yes", "--fast ('yes'): takes no value; see prog --help"),
    ("r --run a --epsiodes 3", "unrecognized argument ('--epsiodes'): did you mean --episodes?"),
    ("r --run a --max_step 3", "unrecognized argument ('--max_step'): did you mean --max-steps?"),
    ("r --run a --max_steps=x", "--max-steps ('x'): expected an integer; see prog --help"),
    ("r --run a --nope", "unrecognized argument ('--nope'): see prog --help"),
    ("r --run a --hidden 3", "unrecognized argument ('--hidden'): see prog --help"),
    ("r --run a stray", "unrecognized argument ('stray'): see prog --help"),
    ("--run a", "ROOT: required; see prog --help"),
    ("r", "--run: required; see prog --help"),
    ("", "ROOT, --run: required; see prog --help"),
    # the first mistake, reading left to right, before what is missing
    ("--episodes abc --nope", "--episodes ('abc'): expected an integer"),
    ("--nope --episodes abc", "unrecognized argument ('--nope')"),
]


@pytest.mark.parametrize("argv, message", REFUSED, ids=[a or "(none)" for a, _ in REFUSED])
def test_a_refusal_is_one_line_naming_the_mistake(argv, message, capsys):
    with pytest.raises(UsageError) as refused:
        parse(Args, argv.split(), "prog")
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value) and capsys.readouterr().err == ""


def test_what_tyro_accepts_is_parsed_as_tyro_parses_it():
    argv = shlex.split(
        "r --run=a --episodes -3 --inner.rate -inf --inner.mode mean --no-progress -o o "
        "--sizes smoke paper --span -1 2 --max_steps 2"
    )
    args = parse(Args, argv, "prog")
    assert diagnose(Args, argv, "prog") is None  # it finds no mistake where tyro finds none
    assert (args.root, args.run, args.episodes, args.out) == (Path("r"), Path("a"), -3, Path("o"))
    assert args.max_steps == 2
    assert args.inner == Inner(rate=float("-inf"), mode="mean")
    assert (args.sizes, args.span, args.progress) == (("smoke", "paper"), (-1.0, 2.0), False)


def test_a_value_error_raised_while_building_keeps_its_words():
    @dataclass
    class Checked:
        n: int = 1

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError(f"--n ({self.n}): must be >= 0, " + "and so on " * 12)

    with pytest.raises(UsageError) as refused:
        parse(Checked, ["--n", "-1"], "prog")
    assert str(refused.value) == "--n (-1): must be >= 0, " + ("and so on " * 12).strip()


def test_help_is_tyros_in_full(capsys):
    with pytest.raises(SystemExit) as done:
        parse(Args, ["--episodes", "abc", "--help"], "prog")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "usage: prog" in out and "--inner.mode" in out and "--hidden" not in out


def test_nearest_flags():
    flags = ["--eval-episodes", "--collect.max-episodes", "--env.max-steps", "--no-fast", "--fast"]
    assert nearest("--eval-episode", flags) == ["--eval-episodes"]
    assert nearest("--epsiodes", flags) == ["--eval-episodes", "--collect.max-episodes"]
    assert nearest("--max-steps", flags) == ["--env.max-steps"]
    assert nearest("--nope", ["--action-ope-states"]) == []  # short words: exact only


def test_trains_first_pass_reads_flags_as_tyro_does():
    options = [("--preset", None), ("--resume", Path), ("--ray-address", None)]
    argv = ["--out", "x", "--ray_address=a:1", "--resume", "None", "--aloe.beta", "-1"]
    known, rest = _known_args(argv, options)
    assert (known.preset, known.resume, known.ray_address) == (None, Path("None"), "a:1")
    assert rest == ["--out", "x", "--aloe.beta", "-1"]
    with pytest.raises(UsageError, match=r"^--preset: needs a string; see aloe train --help$"):
        _known_args(["--preset", "--resume", "d"], options)


def test_resume_takes_the_underscore_spelling_of_its_options(tmp_path, capsys):
    """`--no_progress` is `--no-progress` (as for every flag tyro reads), not a refused option."""
    assert main(["train", "--resume", str(tmp_path), "--no_progress", "--device=cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aloe train: error: --resume ({tmp_path}): not a run directory"), err


def test_no_private_tyro_module_is_imported():
    src = Path(aloe.__file__).parent
    private = [
        f"{path.relative_to(src)}: {line.strip()}"
        for path in src.rglob("*.py")
        for line in path.read_text().splitlines()
        if re.search(r"\btyro\._|from tyro(\.\w+)* import _|from tyro\._", line)
    ]
    assert not private
