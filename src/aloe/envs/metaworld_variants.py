"""MetaWorld's unseen objects: the same policy on objects it never saw in training (Fig. 5,
middle); the `variants` part of MetaWorld's row (`aloe.envs.metaworld.BACKEND`).

A variant edits the MuJoCo model of the manipulated object — the subtree of its root body —
for the duration of a `with applied(env, variant):` block and puts every edited value back
on exit, so variants never leak into each other or into nominal evaluation:

- size s: geometry, geom and child-body offsets, sites and COM offsets scaled by s, inertia
  by s² (mass kept; the mass variant is separate). Mesh geoms keep their shape (MuJoCo
  cannot rescale a compiled mesh); the objects of the tabled tasks collide through
  primitive geoms.
- mass m: masses and inertias of the subtree scaled by m.
- friction f: the sliding friction of the object's geoms scaled by f, and their priority
  raised above every other geom, so that their coefficients govern each contact (MuJoCo
  otherwise takes the larger of the two, and the gripper pads' 2.0 would always win).
- shape: each primitive collision geom swapped for one of the same extent (cylinders,
  capsules and spheres become boxes, boxes become cylinders).
- colour: the geoms' rgba replaced and their material dropped (only images see it).
- position: the object's initial position drawn from a range outside MetaWorld's random
  reset range (the env's `_random_reset_space`, whose first three dims are the object's).

`TASK_OBJECTS` names the object and its unseen range per task; other tasks fall back to the
body of the free joint closest to obs[4:7] and an x range shifted just past the training one.

Every variant stays solvable: the noise-free scripted expert's success on 6 seeds
(`aloe tasks --variants --verify`), nominal 6/6 everywhere:

    task                size-0.9  size-1.1  mass-x3  friction-x0.3  colour  position-out  shape
    peg-insert-side      4/6       6/6       6/6      5/6            6/6     5/6          5/6
    pick-place           6/6       6/6       6/6      2/6            6/6     6/6          6/6
    assembly             6/6       6/6       6/6      6/6            6/6     6/6          (none)
    bin-picking          6/6       6/6       6/6      6/6            6/6     4/6          4/6
    push (fallback)      6/6       6/6       6/6      5/6            6/6     6/6
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
from gymnasium.spaces import Box

TaskEnv = Any  # aloe.envs.metaworld.TaskEnv, whose module imports this one for its row

Vec3 = tuple[float, float, float]
OBJ = slice(4, 7)  # the first object's position in MetaWorld's 39-dim state


@dataclass(frozen=True)
class ObjectSpec:
    """The manipulated object of a task and an initial-position range it never starts in."""

    body: str  # root body of the object
    unseen_low: Vec3
    unseen_high: Vec3
    note: str  # where the training range lies


TASK_OBJECTS: dict[str, ObjectSpec] = {
    "peg-insert-side-v3": ObjectSpec(
        "peg", (0.22, 0.5, 0.02), (0.27, 0.7, 0.02), "training x in [0, 0.2]"
    ),
    "pick-place-v3": ObjectSpec(
        "obj", (0.12, 0.6, 0.02), (0.20, 0.7, 0.02), "training x in [-0.1, 0.1]"
    ),
    "assembly-v3": ObjectSpec(
        "RoundNut", (0.05, 0.6, 0.02), (0.10, 0.6, 0.02), "training: fixed at x = 0"
    ),
    "bin-picking-v3": ObjectSpec(  # still inside the bin (inner y in [0.61, 0.79])
        "obj", (-0.21, 0.755, 0.02), (-0.03, 0.77, 0.02), "training y in [0.65, 0.75]"
    ),
}
FALLBACK_SHIFT = 0.03  # metres past the training range's upper x bound
BLUE = (0.1, 0.3, 0.9, 1.0)


@dataclass(frozen=True)
class Variant:
    """One evaluation condition; the defaults leave the object as trained."""

    name: str
    description: str
    size: float = 1.0
    mass: float = 1.0
    friction: float = 1.0
    rgba: tuple[float, float, float, float] | None = None
    init_low: Vec3 | None = None  # object initial-position range; None = the training one
    init_high: Vec3 | None = None
    shift_init: bool = False  # fallback: x range shifted past the training one
    reshape: bool = False  # round collision geoms become boxes, boxes become cylinders

    @property
    def changes_position(self) -> bool:
        return self.init_low is not None or self.shift_init


SHAPE = Variant(
    "shape", "object shape changed: round geoms become boxes, boxes cylinders", reshape=True
)
# Objects made of many boxes (assembly's nut is a ring of 11): as cylinders the ring closes
# and no longer fits the peg, so the scripted expert solves 0/6; they get no shape variant.
KEEP_SHAPE = {"assembly-v3", "disassemble-v3"}


def task_variants(task: str) -> list[Variant]:
    """The evaluation variants of `task`, nominal first."""
    spec = TASK_OBJECTS.get(task)
    if spec is not None:
        lo = spec.unseen_low
        hi = spec.unseen_high
        where = f"{_span('x', lo[0], hi[0])}, {_span('y', lo[1], hi[1])} ({spec.note})"
        position = Variant("position-out", f"object starts at {where}", init_low=lo, init_high=hi)
    else:
        text = f"object x range shifted {FALLBACK_SHIFT} m past the training range (generic)"
        position = Variant("position-out", text, shift_init=True)
    return [
        Variant("nominal", "the training distribution"),
        Variant("size-0.9", "object geometry scaled by 0.9 (mass kept)", size=0.9),
        Variant("size-1.1", "object geometry scaled by 1.1 (mass kept)", size=1.1),
        Variant("mass-x3", "object three times as heavy", mass=3.0),
        Variant(
            "friction-x0.3", "slippery object: friction x0.3, governing contacts", friction=0.3
        ),
        Variant("colour-blue", "object recoloured blue (seen only by images)", rgba=BLUE),
        *([] if task in KEEP_SHAPE else [SHAPE]),
        position,
    ]


def _span(axis: str, lo: float, hi: float) -> str:
    return f"{axis} = {lo}" if lo == hi else f"{axis} in [{lo}, {hi}]"


def object_body(env: TaskEnv) -> int:
    """Root body id of the manipulated object (the table, else the nearest free joint).

    The fallback resets the env (seed 0) to compare positions where MetaWorld put them.
    """
    model = env.raw.model
    spec = TASK_OBJECTS.get(env.task)
    if spec is not None:
        return int(model.body(spec.body).id)
    state = env.reset(seed=0)[0]["state"]
    free = [
        int(model.jnt_bodyid[j])
        for j in range(model.njnt)
        if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE
    ]
    if not free:
        raise ValueError(f"{env.task}: no free body to treat as the manipulated object")
    dist = [np.linalg.norm(env.raw.data.xpos[b] - state[OBJ]) for b in free]
    return free[int(np.argmin(dist))]


def subtree(model: mujoco.MjModel, root: int) -> np.ndarray:
    """Body ids of `root` and all its descendants."""
    inside = np.zeros(model.nbody, dtype=bool)
    inside[root] = True
    for b in range(root + 1, model.nbody):  # MuJoCo orders parents before children
        inside[b] = inside[model.body_parentid[b]]
    return np.flatnonzero(inside)


# (model field, index kind) of everything a variant may edit; saved and restored by rows
_FIELDS = {
    "body": ("body_pos", "body_ipos", "body_inertia", "body_mass"),
    "geom": (
        "geom_size",
        "geom_pos",
        "geom_rbound",
        "geom_aabb",
        "geom_friction",
        "geom_priority",
        "geom_rgba",
        "geom_matid",
        "geom_type",
    ),
    "site": ("site_pos", "site_size"),
}


@contextmanager
def applied(env: TaskEnv, variant: Variant) -> Iterator[int]:
    """Apply `variant` to env's object for the block (yields the object's root body id)."""
    model = env.raw.model
    root = object_body(env)
    bodies = subtree(model, root)
    rows = {
        "body": bodies,
        "geom": np.flatnonzero(np.isin(model.geom_bodyid, bodies)),
        "site": np.flatnonzero(np.isin(model.site_bodyid, bodies)),
    }
    saved = {f: getattr(model, f)[rows[kind]].copy() for kind, fs in _FIELDS.items() for f in fs}
    reset_space = env.raw._random_reset_space
    try:
        _edit(env, variant, root, rows)
        yield root
    finally:
        for kind, fields in _FIELDS.items():
            for f in fields:
                getattr(model, f)[rows[kind]] = saved[f]
        env.raw._random_reset_space = reset_space


def _edit(env: TaskEnv, v: Variant, root: int, rows: dict[str, np.ndarray]) -> None:
    m = env.raw.model
    bodies = rows["body"]
    geoms = rows["geom"]
    sites = rows["site"]
    if v.size != 1.0:
        children = bodies[bodies != root]
        m.body_pos[children] *= v.size
        m.body_ipos[bodies] *= v.size
        m.body_inertia[bodies] *= v.size**2
        m.geom_pos[geoms] *= v.size
        solid = geoms[m.geom_type[geoms] != mujoco.mjtGeom.mjGEOM_MESH]
        m.geom_size[solid] *= v.size
        m.geom_rbound[solid] *= v.size
        m.geom_aabb[solid] *= v.size
        m.site_pos[sites] *= v.size
        m.site_size[sites] *= v.size
    if v.reshape:
        _reshape(m, geoms)
    if v.mass != 1.0:
        m.body_mass[bodies] *= v.mass
        m.body_inertia[bodies] *= v.mass
    if v.friction != 1.0:
        m.geom_friction[geoms, 0] *= v.friction
        m.geom_priority[geoms] = int(m.geom_priority.max()) + 1
    if v.rgba is not None:
        m.geom_rgba[geoms] = v.rgba
        m.geom_matid[geoms] = -1
    if v.changes_position:
        space = env.raw._random_reset_space
        low = space.low.copy()
        high = space.high.copy()
        if v.init_low is not None and v.init_high is not None:
            low[:3], high[:3] = v.init_low, v.init_high
        else:
            width = max(high[0] - low[0], 0.05)
            low[0] = high[0] + FALLBACK_SHIFT
            high[0] = low[0] + width
        env.raw._random_reset_space = Box(low, high, dtype=np.float64)


_G = mujoco.mjtGeom


def _reshape(m: mujoco.MjModel, geoms: np.ndarray) -> None:
    """Swap each primitive geom's type for one of the same extent (bounds kept consistent)."""
    for g in geoms:
        size = m.geom_size[g]
        kind = m.geom_type[g]
        if kind in (_G.mjGEOM_CYLINDER, _G.mjGEOM_CAPSULE, _G.mjGEOM_SPHERE):
            r = size[0]
            h = r if kind == _G.mjGEOM_SPHERE else size[1] + (r if kind == _G.mjGEOM_CAPSULE else 0)
            half = np.array([r, r, h])
            m.geom_type[g] = _G.mjGEOM_BOX
        elif kind == _G.mjGEOM_BOX:
            half = np.array([max(size[0], size[1])] * 2 + [size[2]])
            m.geom_type[g] = _G.mjGEOM_CYLINDER
        else:
            continue  # meshes, planes, ellipsoids keep their shape
        m.geom_size[g] = [half[0], half[2], 0.0] if m.geom_type[g] == _G.mjGEOM_CYLINDER else half
        m.geom_aabb[g, 3:] = half
        m.geom_rbound[g] = float(np.linalg.norm(half))


class _Variants:
    """`aloe.envs.base.Variants` of MetaWorld's tasks."""

    def of(self, task: str) -> list[Variant]:
        return task_variants(task)

    def applied(self, env: TaskEnv, variant: Variant) -> AbstractContextManager[int]:
        return applied(env, variant)


VARIANTS = _Variants()
