"""The operator-skill sweep (issue 34, item 5): one `aloe compare` per operator profile, then
each algorithm's final success against the operator's own success rate.

    MUJOCO_GL=osmesa python benchmarks/skill_sweep.py --out runs/skill-sweep \
        [--profiles oracle human clumsy] [--algos aloe,dagger,awr] [--seeds 3] \
        [--task pick-place-v3] [--train-args '--iterations 8 --final-eval-episodes 100'] \
        [--dir human=runs/pp-human] [--plot-only]

Each profile's comparison is `aloe compare --algos ALGOS --seeds N --out OUT/PROFILE
--train-args 'TRAIN_ARGS --operator.profile PROFILE'`, resumed where it exists, so a sweep
stopped at any point continues from its finished runs. `--dir PROFILE=PATH` reads an
existing comparison of that profile instead of running one (say which: its settings are not
checked here). `--plot-only` runs nothing and reads what is there.

The operator's own success rate is measured in the runs, not assumed: the share of the
episodes it took over in the loop (iteration >= 1, every algorithm and seed of the profile)
that ended in success. With the default `--collect.handback-steps 0` the operator finishes
every episode it takes over, so this is how often its corrections succeed from the states
the policies left it (± the binomial standard error over those episodes).

Writes OUT/sweep.md (a table: profile, operator success, each algorithm's final success
mean ± std over seeds with the seeds' values) and OUT/sweep.png (final success against the
operator's success, one line per algorithm, error bars the std over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from aloe.compare_dir import discover, read_metrics, run_state
from aloe.datasets.store import EpisodeStore

PROFILES = ("oracle", "human", "clumsy")
TRAIN_ARGS = "--iterations 8 --final-eval-episodes 100"


def operator_success(runs: list[Path]) -> tuple[float, float, int]:
    """(rate, binomial standard error, episodes) of the taken-over episodes of `runs`' stores
    (iterations >= 1); (nan, nan, 0) where there are none."""
    wins = n = 0
    for run in runs:
        if not (run / "dataset" / "meta").is_dir():
            continue
        ep = EpisodeStore.open(run / "dataset").episodes()
        taken = (np.asarray(ep["takeovers"]) > 0) & (np.asarray(ep["iteration"]) >= 1)
        wins += int(np.asarray(ep["success"])[taken].sum())
        n += int(taken.sum())
    if n == 0:
        return math.nan, math.nan, 0
    p = wins / n
    return p, math.sqrt(p * (1 - p) / n), n


def final_success(found: dict[str, list[Path]]) -> dict[str, list[float]]:
    """Each algorithm's final success (the last iteration's evaluation) per finished seed of
    `found`'s runs (`discover`'s)."""
    out: dict[str, list[float]] = {}
    for algo, runs in found.items():
        for run in runs:
            if run_state(run).finished:
                out.setdefault(algo, []).append(float(read_metrics(run)[-1]["success_rate"]))
    return out


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    seeds = ", ".join(f"{v:.2f}" for v in values)
    return f"{np.mean(values):.2f} ± {np.std(values):.2f} ({seeds})"


def sweep_rows(dirs: dict[str, Path], algos: list[str]) -> list[dict[str, Any]]:
    rows = []
    for profile, root in dirs.items():
        found = discover(root) if root.is_dir() else {}
        rate, se, n = operator_success([r for rs in found.values() for r in rs])
        finals = final_success(found)
        rows.append(
            {"profile": profile, "operator": rate, "operator_se": se, "operator_episodes": n}
            | {a: finals.get(a, []) for a in algos}
        )
    return rows


def table(rows: list[dict[str, Any]], algos: list[str]) -> str:
    head = "| operator profile | operator's correction success (episodes) | " + " | ".join(
        f"{a}: final success" for a in algos
    )
    lines = [head + " |", "|" + "---|" * (2 + len(algos))]
    for r in rows:
        op = "–" if not r["operator_episodes"] else f"{r['operator']:.2f} ± {r['operator_se']:.2f}"
        cells = [r["profile"], f"{op} ({r['operator_episodes']})"] + [cell(r[a]) for a in algos]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], algos: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, algo in enumerate(algos):
        shift = 0.006 * (i - (len(algos) - 1) / 2)  # side by side, so the error bars show
        pts = sorted(
            (r["operator"] + shift, np.mean(r[algo]), np.std(r[algo]), r["profile"])
            for r in rows
            if r[algo] and r["operator_episodes"]
        )
        if pts:
            x, y, err, _ = zip(*pts, strict=True)
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=algo)
    for r in rows:
        if r["operator_episodes"]:
            ax.axvline(r["operator"], color="0.85", lw=0.8, zorder=0)
            ax.annotate(r["profile"], (r["operator"], 1.0), ha="center", fontsize=8, color="0.4")
    ax.set(
        xlabel="operator's own correction success (taken-over episodes that succeed)",
        ylabel="final success (mean ± std over seeds)",
        xlim=(0.0, 1.02),
        ylim=(-0.02, 1.05),
    )
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_compare(args: argparse.Namespace, profile: str, out: Path) -> None:
    train = f"{args.train_args} --operator.profile {profile}"
    cmd = [sys.executable, "-m", "aloe.cli", "compare", "--task", args.task]
    cmd += ["--algos", args.algos, "--seeds", str(args.seeds), "--out", str(out)]
    cmd += [f"--train-args={train}"] + shlex.split(args.compare_args)
    print("$ " + shlex.join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def parse_dirs(items: list[str], profiles: list[str]) -> dict[str, Path]:
    dirs = {}
    for item in items:
        profile, sep, path = item.partition("=")
        if not sep or profile not in profiles:
            sys.exit(f"--dir {item!r}: expected PROFILE=PATH with PROFILE one of {profiles}")
        dirs[profile] = Path(path)
    return dirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="sweep directory")
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=PROFILES)
    parser.add_argument("--algos", default="aloe,dagger,awr")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--task", default="pick-place-v3")
    parser.add_argument("--train-args", default=TRAIN_ARGS)
    parser.add_argument("--compare-args", default="", help="more `aloe compare` options")
    parser.add_argument("--dir", action="append", default=[], help="PROFILE=PATH to read")
    parser.add_argument("--plot-only", action="store_true", help="run nothing, read only")
    args = parser.parse_args()
    algos = args.algos.split(",")
    given = parse_dirs(args.dir, args.profiles)
    dirs = {p: given.get(p, args.out / p) for p in args.profiles}
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.plot_only:
        for profile in args.profiles:
            if profile not in given:
                run_compare(args, profile, dirs[profile])
    rows = sweep_rows(dirs, algos)
    md = table(rows, algos)
    (args.out / "sweep.md").write_text(md)
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=1, default=str))
    plot(rows, algos, args.out / "sweep.png")
    print(md + f"\nwrote {args.out / 'sweep.md'}, {args.out / 'sweep.png'}")


if __name__ == "__main__":
    main()
