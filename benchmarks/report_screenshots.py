"""Look at reports as a reader does: headless Chromium screenshots of report.html pages.

    python benchmarks/report_screenshots.py OUT_DIR PAGE.html [PAGE.html ...]

For each page, two PNGs in OUT_DIR: `<name>-1280x800.png`, the first screen of a laptop,
and `<name>-full.png`, the whole page at the same width (a tall window). The check is by
eye: the headline on the first screen, every axis labelled, no flat or one-point plot.
Run it after `aloe train --preset smoke` and `aloe compare --preset smoke`:

    aloe train --preset smoke --out runs/smoke
    aloe compare --preset smoke --algos aloe,bc --seeds 1 --out runs/cmp-smoke
    python benchmarks/report_screenshots.py shots runs/smoke/report.html runs/cmp-smoke/report.html

Needs a Chromium (`apt-get install chromium` on Debian); it is not a dependency of aloe.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

WIDTH, HEIGHT, FULL_HEIGHT = 1280, 800, 6000


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("report_screenshots: no chromium on PATH (apt-get install chromium)")


def screenshot(page: Path, png: Path, height: int) -> None:
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={WIDTH},{height}",
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for page in map(Path, argv[1:]):
        name = page.parent.name
        screenshot(page, out / f"{name}-{WIDTH}x{HEIGHT}.png", HEIGHT)
        screenshot(page, out / f"{name}-full.png", FULL_HEIGHT)
        print(out / f"{name}-{WIDTH}x{HEIGHT}.png", out / f"{name}-full.png")


if __name__ == "__main__":
    main(sys.argv[1:])
