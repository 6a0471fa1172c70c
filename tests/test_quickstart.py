"""Every command of the README's Quickstart, in order, in a temporary directory.

The commands are read from the README's Quickstart code block, so the README cannot drift
from the CLI: a renamed flag, a removed command or a wrong path fails here. They run
in-process (`aloe.cli.main`; `compare` starts its `aloe train` runs as subprocesses), each
must exit 0, and the runs they make are what the later commands read.

What the test changes, so that the whole Quickstart fits in about 2-3 CPU minutes (torch
runs on one thread, as `aloe compare` runs each of its trainings; two threads that wait for
each other on a busy machine cost more CPU than they save):

- every fresh `aloe train` runs the `smoke` preset (`--preset smoke` added, or put in place
  of the README's preset), shrunk further by TINY (one iteration of a few update steps, one
  demonstration per task, one episode per collection and evaluation); the flags the README
  gives keep their meaning, only the sizes in SIZES are lowered;
- `aloe compare` runs the smoke preset on one seed (also where the README leaves --seeds
  at its default, 3), its runs shrunk by TINY and OTHERS (appended to its --train-args);
- `aloe eval --suite full` gets tiny sample sizes (EVAL_FULL), `aloe bench` one small size,
  few steps, one thread and small batches (BENCH);
- SIZES lowers the counts the README gives (episodes, seeds, quotas), and `plot-q` plots
  episode 0, since a tiny run's store holds a handful of episodes, not 13.

Every rule must be used by some command: a rule the README no longer needs fails the test,
so this list stays the list of what differs from the README.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from aloe.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.render]  # the Quickstart trains on camera images

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = [
    "--iterations",
    "1",
    "--bc-steps",
    "5",
    "--num-demos",
    "1",
    "--eval-episodes",
    "1",
    "--collect.success-quota",
    "1",
    "--collect.max-episodes",
    "1",
    "--aloe.critic-steps",
    "5",
    "--aloe.actor-steps",
    "2",
    "--env.max-steps",
    "120",  # the default operator, the human profile, needs ~75 steps for pick-place
]
# what compare's runs of the other algorithms shrink too (`aloe train` refuses another
# algorithm's options; the Quickstart trains ALOE)
OTHERS = ["--awr.value-steps", "5", "--awr.actor-steps", "2", "--dagger.steps", "2"]
SIZES = {  # (command, flag) -> the value used instead of the README's
    ("collect", "--episodes"): "1",
    ("train", "--collect.success-quota"): "1",
    ("train", "--collect.max-episodes"): "1",
    ("train", "--eval-episodes"): "1",
    ("eval", "--episodes"): "1",
    ("compare", "--seeds"): "1",
    ("plot-q", "--episode"): "0",
}
EVAL_FULL = [
    "--episodes",
    "1",
    "--ope-pairs",
    "2",
    "--ope-rollouts",
    "1",
    "--action-ope-states",
    "2",
    "--action-ope-chunks",
    "2",
    "--action-ope-rollouts",
    "1",
]
BENCH = [
    "--sizes",
    "smoke",
    "--steps",
    "60",
    "--repeats",
    "1",
    "--threads",
    "1",
    "--horizon",
    "10",
    "--batch-size",
    "32",
]


def quickstart_commands(readme: str) -> list[list[str]]:
    """The argv of each command in the Quickstart's code block (comments dropped, `\\`
    continuations joined)."""
    section = readme.split("\n## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's Quickstart has no ```bash block"
    text = block.group(1).replace("\\\n", " ")
    return [argv for line in text.splitlines() if (argv := shlex.split(line, comments=True))]


def _set(argv: list[str], flag: str, value: str) -> bool:
    """Give `flag` the value `value` in argv (`--flag V` or `--flag=V`); False if absent."""
    for i, token in enumerate(argv):
        if token == flag:
            argv[i + 1] = value
            return True
        if token.startswith(flag + "="):
            argv[i] = f"{flag}={value}"
            return True
    return False


def substitute(argv: list[str], used: set[str]) -> list[str]:
    """The argv the test runs for one README command (see the module's docstring)."""
    assert argv[0] == "aloe", f"a Quickstart line that is not an aloe command: {argv}"
    argv = argv[1:]
    command = argv[0]
    for (cmd, flag), value in SIZES.items():
        if cmd == command and _set(argv, flag, value):
            used.add(f"{cmd} {flag}")
    if command == "train" and "--resume" not in argv:
        if not _set(argv, "--preset", "smoke"):
            argv += ["--preset", "smoke"]
        argv += TINY
        used.add("train TINY")
    if command == "eval" and "full" in argv:
        argv += EVAL_FULL
        used.add("eval full")
    if command == "compare":
        extra = " ".join(TINY + OTHERS)
        if not _set(argv, "--train-args", _value(argv, "--train-args") + " " + extra):
            argv.append(f"--train-args={extra}")
        argv += ["--preset", "smoke"] + ([] if "--seeds" in argv else ["--seeds", "1"])
        used.add("compare TINY")
    if command == "bench":
        argv += BENCH
        used.add("bench")
    return argv


def _value(argv: list[str], flag: str) -> str:
    for i, token in enumerate(argv):
        if token == flag:
            return argv[i + 1]
        if token.startswith(flag + "="):
            return token.partition("=")[2]
    return ""


def test_every_quickstart_command_runs_in_order(tmp_path, monkeypatch, capsys):
    commands = quickstart_commands(README.read_text())
    assert len(commands) >= 10, commands  # the block was found and parsed
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        used = _run_all(commands, capsys)
    finally:
        torch.set_num_threads(threads)
    rules = {f"{c} {f}" for c, f in SIZES} | {"train TINY", "eval full", "compare TINY", "bench"}
    assert used == rules, f"rules no Quickstart command needs any more: {rules - used}"
    assert (tmp_path / "runs" / "cmp" / "report.html").is_file()
    assert (tmp_path / "runs" / "aloe" / "eval.json").is_file()


def _run_all(commands: list[list[str]], capsys: pytest.CaptureFixture[str]) -> set[str]:
    """Run each command's substitute; each must exit 0, and a train end with its summary."""
    used: set[str] = set()
    for readme_argv in commands:
        argv = substitute(readme_argv, used)
        status = main(argv)
        out, err = capsys.readouterr()
        assert status == 0, f"{shlex.join(readme_argv)}\n  ran as aloe {shlex.join(argv)}\n{err}"
        if argv[0] == "train":  # every run ends with the summary, its report written
            summary = err[err.rindex("aloe train: ") :]
            assert "finished" in summary and "BC → final" in summary, err
            run = Path(argv[argv.index("--resume" if "--resume" in argv else "--out") + 1])
            assert f"report       {run / 'report.html'}" in summary and "\r" not in err
    return used


def test_substitutions_keep_the_readme_flags():
    used: set[str] = set()
    argv = substitute(
        shlex.split("aloe compare --algos aloe,dagger --train-args='--aloe.beta 2' --out runs/b2"),
        used,
    )
    assert argv[:3] == ["compare", "--algos", "aloe,dagger"]
    assert _value(argv, "--train-args").startswith("--aloe.beta 2 --iterations 1")
    assert argv[argv.index("--seeds") + 1] == "1" and argv.count("--seeds") == 1
    argv = substitute(shlex.split("aloe train --preset default --task mt10 --out r"), used)
    assert argv[argv.index("--preset") + 1] == "smoke" and argv.count("--preset") == 1
    assert argv[argv.index("--task") + 1] == "mt10"
