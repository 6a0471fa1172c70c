"""Episodes written by LeRobot's own dataset writer (`LeRobotDataset.create`, `add_frame`,
`save_episode`), as `lerobot-record` writes them: the datasets of the LeRobot tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from aloe import data as D


def record(root: Path, episodes: list[D.Episode], fps: int = 80, images: bool = False) -> Path:
    """`episodes` written by LeRobot's own dataset writer, as `lerobot-record` writes them;
    with `images`, a 32x32 video camera whose k-th frame is flat at `brightness(k)`."""
    features = {
        "observation.state": {"dtype": "float32", "shape": (39,), "names": None},
        "action": {"dtype": "float32", "shape": (4,), "names": None},
    }
    if images:
        names = ["height", "width", "channels"]
        features[D.image_key("corner")] = {"dtype": "video", "shape": (32, 32, 3), "names": names}
    dataset = LeRobotDataset.create(
        repo_id="local/metaworld-expert",
        fps=fps,
        features=features,
        root=root,
        robot_type="sawyer",
        use_videos=images,
    )
    index = 0
    for ep in episodes:
        for t in range(len(ep)):
            frame = {
                "observation.state": ep.steps[D.STATE][t],
                "action": ep.steps[D.ACTION][t],
                "task": ep.instruction,
            }
            if images:
                frame[D.image_key("corner")] = np.full((32, 32, 3), brightness(index), np.uint8)
            dataset.add_frame(frame)
            index += 1
        dataset.save_episode()
    dataset.finalize()
    return root


def brightness(index: np.ndarray | int) -> np.ndarray:
    return 20 + 6 * np.asarray(index)
