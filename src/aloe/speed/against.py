"""Another git revision's figures beside this one's (`aloe bench --against REV`).

The revision's tree is exported with `git archive` into a temporary directory (the
repository, its index and its worktrees stay as they are), and that revision's own bench
runs in a child process with PYTHONPATH at the export's `src`: `python -m aloe.cli bench`
with the options it knows (read from its `--help`) set as this run's are, writing its JSON
to a file. Figures renamed since are mapped by LEGACY_NAMES; one the revision does not
report shows as "-" in the table.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import aloe
from aloe.errors import bad, require
from aloe.speed.measure import say

# figure names of revisions before the nested report -> their names now
LEGACY_NAMES = {
    "task": "run.task",
    "horizon": "sampler.horizon",
    "batch": "sampler.batch",
    "env_raw_steps_per_s": "loop.raw.steps_per_s",
    "collect_demo_steps_per_s": "loop.collect_demo.steps_per_s",
    "collect_demo_vs_raw": "loop.collect_demo.vs_raw",
    "collect_takeover_steps_per_s": "loop.collect_random.steps_per_s",
    "collect_takeover_vs_raw": "loop.collect_random.vs_raw",
    "sampler_batches_per_s": "sampler.batches_per_s",
    "critic_steps_per_s": "sampler.critic_steps_per_s",
    "actor_steps_per_s": "sampler.actor_steps_per_s",
    "sampler_vs_critic_step": "sampler.vs_critic_step",
}


def source_checkout() -> Path | None:
    """The git work tree aloe is imported from, or None (an installed copy, or no git)."""
    src = Path(aloe.__file__).resolve().parent
    try:
        out = _git(src, "rev-parse", "--show-toplevel")
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(out)


def describe_source() -> str:
    """Where this aloe is imported from, with its git revision when it is a checkout."""
    root = source_checkout()
    if root is None:
        return str(Path(aloe.__file__).parent)
    return f"{root} @ {_git(root, 'describe', '--always', '--dirty')}"


def resolve(rev: str) -> tuple[Path, str]:
    """(the checkout, the commit `rev` names in it); a UsageError when there is none."""
    root = source_checkout()
    require(
        root is not None,
        "--against",
        rev,
        f"aloe runs from {Path(aloe.__file__).parent}, not from a git checkout; run the "
        "bench from a clone of aloe",
    )
    assert root is not None
    require(not rev.startswith("-"), "--against", rev, "a revision, not an option of git")
    try:
        commit = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise bad("--against", rev, f"not a commit, branch or tag of {root}") from None
    has_aloe = bool(_git(root, "ls-tree", "-d", "--name-only", commit, "src/aloe"))
    require(has_aloe, "--against", rev, "its tree has no src/aloe to import aloe from")
    return root, commit


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def export(root: Path, commit: str, dest: Path) -> Path:
    """The commit's tree extracted under `dest` (git archive); returns its src directory."""
    tar = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", commit], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    return dest / "src"


def supported_flags(help_text: str) -> set[str]:
    """The long options a `--help` text lists."""
    return set(re.findall(r"(?<![\w-])(--[a-z][\w.-]*)", help_text))


def child_argv(options: dict[str, list[str]], supported: set[str]) -> list[str]:
    """This run's options, those the other revision knows (`options`: flag -> values)."""
    argv: list[str] = []
    for flag, values in options.items():
        if flag in supported:
            argv += [flag, *values]
    return argv


class Revision:
    """Another revision's tree, exported and probed on entry (a UsageError when it has no
    bench to run, before this revision measures anything), removed on exit."""

    def __init__(self, rev: str) -> None:
        self.rev = rev
        self.root, self.commit = resolve(rev)

    def __enter__(self) -> Revision:
        self._tmp = tempfile.TemporaryDirectory(prefix="aloe-bench-")
        self.dir = Path(self._tmp.name)
        try:
            src = export(self.root, self.commit, self.dir / "tree")
            path = os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH")) if p)
            self.env = {**os.environ, "PYTHONPATH": path}
            _check_imports_from(src, self.env, self.dir)
            self.cli = [sys.executable, "-m", "aloe.cli", "bench"]
            probe = subprocess.run(
                [*self.cli, "--help"], env=self.env, cwd=self.dir, capture_output=True, text=True
            )
            require(
                probe.returncode == 0,
                "--against",
                self.rev,
                f"its `aloe bench --help` failed (exit {probe.returncode}): that revision "
                "has no bench to run",
            )
        except BaseException:
            self._tmp.cleanup()
            raise
        self.flags = supported_flags(probe.stdout)
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    def run(self, options: dict[str, list[str]]) -> dict[str, Any]:
        """That revision's bench with `options` (flag -> values) it knows: its figures as it
        wrote them, with the revision and commit (no figures and an "error" if it failed)."""
        out = self.dir / "figures.json"
        argv = [*child_argv(options, self.flags), "--out", str(out)]
        say(f"--against {self.rev} ({self.commit[:10]}): bench {' '.join(argv[:-2])}")
        done = subprocess.run(
            [*self.cli, *argv], env=self.env, cwd=self.dir, stdout=subprocess.DEVNULL
        )
        found = {"rev": self.rev, "commit": self.commit}
        if done.returncode != 0:  # its error is on stderr above; this run's figures still count
            say(f"--against {self.rev}: its bench failed (exit {done.returncode}); no figures")
            return {**found, "figures": {}, "error": f"exit {done.returncode}"}
        return {**found, "figures": json.loads(out.read_text())}


def _check_imports_from(src: Path, env: dict[str, str], cwd: Path) -> None:
    """The child must import the exported aloe, not this one (an editable install's hook
    could shadow PYTHONPATH): else the two columns would measure the same code."""
    where = subprocess.run(
        [sys.executable, "-c", "import aloe; print(aloe.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if not Path(where.strip()).resolve().is_relative_to(src.resolve()):
        raise RuntimeError(
            f"the exported revision imports aloe from {where.strip()}, not "
            f"from {src}: the comparison would not be side by side"
        )


def flatten(figures: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested figures as {"a.b.c": value}; names of older revisions mapped by LEGACY_NAMES."""
    flat: dict[str, Any] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[LEGACY_NAMES.get(name, name) if not prefix else name] = value
    return flat
