"""Message checks against a run with a camera (the end-to-end tests are state-only)."""

from __future__ import annotations

import numpy as np
import pytest

from aloe.serve import protocol as P

SPEC = P.Spec(
    state_dim=39,
    action_dim=4,
    horizon=10,
    cameras={"corner": (32, 32)},
    instructions=("pick", "push"),
    sim_state_dim=None,
)
IMAGE = "observation.images.corner"


def request(**fields):
    return {P.STATE: np.zeros(39, np.float32), IMAGE: np.zeros((32, 32, 3), np.uint8), **fields}


def test_an_observation_with_its_camera_and_instruction():
    obs = P.observation(
        request(), SPEC, P.read_instruction(request(prompt="push"), SPEC, ("prompt",))
    )
    assert obs["instruction"] == "push" and obs["images"]["corner"].shape == (32, 32, 3)


@pytest.mark.parametrize(
    "fields, says",
    [
        ({IMAGE: np.zeros((32, 32, 3), np.uint16)}, "uint8"),
        ({IMAGE: np.zeros((32, 31, 3), np.uint8)}, "shape"),
        ({IMAGE: np.zeros((32, 32, 3), np.float32)}, "uint8"),
        ({IMAGE: None}, "not a numpy array"),
    ],
)
def test_camera_images_must_be_the_runs(fields, says):
    with pytest.raises(P.ProtocolError, match=says):
        P.observation(request(**fields), SPEC, "pick")


def test_a_multi_task_run_needs_one_of_its_instructions():
    with pytest.raises(P.ProtocolError, match="required"):
        P.read_instruction(request(), SPEC, ("prompt", "task"))
    with pytest.raises(P.ProtocolError, match="not one of this run's instructions"):
        P.read_instruction(request(task="fly"), SPEC, ("prompt", "task"))
    assert P.read_instruction(request(task="pick"), SPEC, ("prompt", "task")) == "pick"


def test_a_step_without_sim_state_where_none_is_kept():
    step = P.step(
        {
            **request(),
            "action": np.zeros(4),
            "next.observation.state": np.zeros(39),
            "source": "human",
            "outcome": "failure",
            "failure_reason": "dropped",
        },
        SPEC,
        "pick",
    )
    assert step.sim_state is None and step.reason == "dropped" and step.action.dtype == np.float32
