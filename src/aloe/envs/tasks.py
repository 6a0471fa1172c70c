"""The tasks: instructions, which ones aloe supports, and which backend runs each.

MetaWorld v3 tasks: supported when MetaWorld's scripted expert (our simulated operator) solves
it; the list below was measured with `aloe tasks --verify` (10 seeded episodes each,
noise-free). OGBench manipulation tasks (`aloe.envs.ogbench_tasks.TASKS`, the `ogbench`
extra): run by `OGBenchEnv` with the composed operator. `aloe.envs.registry.make_env` is the
one place a task name becomes an environment.
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

from aloe.envs.ogbench_tasks import ACTION_DIM as OGBENCH_ACTION_DIM
from aloe.envs.ogbench_tasks import TASKS as OGBENCH_TASKS

# The default task of training and comparisons: with 2 noisy demonstrations BC alone
# succeeds 7-10 % of the time, in the paper's BC range (measured, see README).
DEFAULT_TASK = "pick-place-v3"

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "put the ring on the peg",
    "basketball-v3": "dunk the ball into the basket",
    "bin-picking-v3": "move the cube from one bin to the other",
    "box-close-v3": "put the lid on the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button from the top, behind the wall",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "press the button behind the wall",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "take the ring off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by turning the lock",
    "drawer-close-v3": "close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-close-v3": "turn the faucet off",
    "faucet-open-v3": "turn the faucet on",
    "hammer-v3": "hammer the nail into the wall",
    "hand-insert-v3": "insert the gripper into the hole",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "pick-out-of-hole-v3": "pick the peg out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "plate-slide-back-side-v3": "slide the plate back into the cabinet from the side",
    "plate-slide-back-v3": "slide the plate back into the cabinet",
    "plate-slide-side-v3": "slide the plate into the cabinet from the side",
    "plate-slide-v3": "slide the plate into the cabinet",
    "push-back-v3": "push the puck back to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck to the goal around the wall",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "reach the goal position over the wall",
    "shelf-place-v3": "place the puck on the shelf",
    "soccer-v3": "kick the ball into the goal",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "stick-push-v3": "grasp the stick and push the box with it",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-close-v3": "close the window",
    "window-open-v3": "open the window",
}

INSTRUCTIONS.update({name: t.instruction for name, t in OGBENCH_TASKS.items()})

# Tasks whose scripted expert fails too often to serve as an operator (measured; see module doc).
UNSUPPORTED: dict[str, str] = {}


def supported_tasks() -> list[str]:
    """The tasks this installation runs (the OGBench ones where the extra is installed)."""
    og = importlib.util.find_spec("ogbench") is not None
    return sorted(
        t for t in INSTRUCTIONS if t not in UNSUPPORTED and (og or t not in OGBENCH_TASKS)
    )


def uninstalled_tasks() -> dict[str, list[str]]:
    """The tasks whose simulator this installation lacks, by the extra that brings it."""
    if importlib.util.find_spec("ogbench") is not None:
        return {}
    return {"ogbench": sorted(OGBENCH_TASKS)}


# Multi-task suites: one policy and one critic over several tasks, told apart by the
# instruction alone. MT10 as MetaWorld defines it (`metaworld.MT10().train_classes`).
SUITES: dict[str, tuple[str, ...]] = {
    "mt10": (
        "reach-v3",
        "push-v3",
        "pick-place-v3",
        "door-open-v3",
        "drawer-open-v3",
        "drawer-close-v3",
        "button-press-topdown-v3",
        "peg-insert-side-v3",
        "window-open-v3",
        "window-close-v3",
    ),
}


def task_list(name: str) -> list[str]:
    """The tasks a `--task` value names: a suite (`mt10`), a comma-separated list, or one."""
    if name in SUITES:
        return list(SUITES[name])
    tasks = [check_task(t.strip()) for t in name.split(",") if t.strip()]
    if not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(
            f"task {name!r}: name one task, a suite ({', '.join(SUITES)}) or a "
            "comma-separated list of distinct tasks"
        )
    if len(tasks) > 1 and any(backend(t) == "ogbench" for t in tasks):
        raise ValueError(f"task {name!r}: an OGBench task runs alone, not in a list")
    return tasks


def check_task(name: str) -> str:
    """Return `name` if aloe supports it (a task, or a suite / list of them, see
    `task_list`), else raise ValueError listing what is allowed."""
    if name in SUITES or ("," in name and task_list(name)):
        return name
    if name in OGBENCH_TASKS and importlib.util.find_spec("ogbench") is None:
        raise ValueError(f"task {name!r} needs OGBench: pip install 'aloe[ogbench]'")
    if name in INSTRUCTIONS and name not in UNSUPPORTED:
        return name
    if name in UNSUPPORTED:
        raise ValueError(f"task {name!r} is not supported: {UNSUPPORTED[name]}")
    close = [t for t in INSTRUCTIONS if name.split("-")[0] in t]
    hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
    raise ValueError(f"unknown task {name!r}{hint}; `aloe tasks` lists the supported tasks")


def backend(task: str) -> str:
    """Which simulator runs `task` (one task, not a suite): "metaworld" or "ogbench"."""
    return "ogbench" if task in OGBENCH_TASKS else "metaworld"


class Dims(NamedTuple):
    state: int  # observation.state's width
    action: int


def task_dims(name: str) -> Dims:
    """State and action widths of the tasks `name` names (all tasks of a list share them)."""
    first = task_list(name)[0]
    if backend(first) == "ogbench":
        return Dims(OGBENCH_TASKS[first].state_dim, OGBENCH_ACTION_DIM)
    return Dims(39, 4)  # aloe.envs.metaworld.TaskEnv.STATE_DIM, ACTION_DIM
