"""Episodes written by LeRobot's own dataset writer (`LeRobotDataset.create`, `add_frame`,
`save_episode`), as `lerobot-record` writes them: the datasets of the LeRobot tests. And
the demonstrations of the fake SO-101 (`fake_devices`) that `lerobot-record` would write of
a person moving its leader arm, in the arm's units (degrees)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fake_devices import MOTORS, POSE, START
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from aloe import data as D

PICK = "pick up the cube"
DEMO_STEP = np.array([10.0, 10.0, -10.0, -10.0, 0.0, 10.0])  # between the demos' goals


def record(
    root: Path,
    episodes: list[D.Episode],
    fps: int = 80,
    images: bool = False,
    robot_type: str = "sawyer",
    names: list[str] | None = None,
) -> Path:
    """`episodes` written by LeRobot's own dataset writer, as `lerobot-record` writes them
    (state and action as wide as theirs, named `names`); with `images`, a 32x32 video camera
    whose k-th frame is flat at `brightness(k)`."""
    steps = episodes[0].steps
    features = {
        key: {"dtype": "float32", "shape": (steps[key].shape[1],), "names": names}
        for key in ("observation.state", "action")
    }
    if images:
        axes = ["height", "width", "channels"]
        features[D.image_key("corner")] = {"dtype": "video", "shape": (32, 32, 3), "names": axes}
    dataset = LeRobotDataset.create(
        repo_id=f"local/{robot_type}-demos",
        fps=fps,
        features=features,
        root=root,
        robot_type=robot_type,
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


def arm_demos(episodes: int = 3, length: int = 20) -> list[D.Episode]:
    """The fake SO-101's demonstrations, in degrees: from `START` to a goal around the
    leader's `POSE` (episode e's: POSE + (e - 1) * DEMO_STEP), commanded from START on and
    reached 5 frames before the end, the follower one frame behind its command; the wrist is
    never rolled (its range is degenerate: 0 to 0)."""
    start = np.asarray(START)
    out = []
    for e in range(episodes):
        goal = np.asarray(POSE) + (e - 1) * DEMO_STEP
        goal[MOTORS.index("wrist_roll")] = 0.0
        ramp = np.minimum(1.0, np.arange(length) / (length - 5))[:, None]
        action = (start + (goal - start) * ramp).astype(np.float32)
        state = np.concatenate([start[None], action[:-1]]).astype(np.float32)
        steps = {D.STATE: state, D.ACTION: action}
        out.append(D.Episode(task="robot", instruction=PICK, steps=steps))
    return out
