"""Camera images of a MuJoCo scene, shared by the MuJoCo simulators (MetaWorld, OGBench).

`Cameras` renders the configured cameras at a simulator state from a private `MjData`;
`LazyImages` is an observation's images, rendered on first access.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import mujoco
import numpy as np

from aloe.envs import GL_LATE
from aloe.envs.base import MAX_CAMERAS

# MuJoCo's default shadow maps (MetaWorld asks for 4096² with 4× multisampling) cost a CPU
# several times the frame time and change nothing visible at 32-96 px.
_SHADOW_SIZE = 1024

_SLOW_FLAGS = (
    mujoco.mjtRndFlag.mjRND_SHADOW,
    mujoco.mjtRndFlag.mjRND_REFLECTION,
    mujoco.mjtRndFlag.mjRND_SKYBOX,
)


class LazyImages(Mapping[str, np.ndarray]):
    """An observation's camera images, rendered on first access from the simulator state
    captured when the observation was made: evaluation, which reads one observation per
    executed chunk, renders only those; collection, which records every step, renders all."""

    def __init__(self, cameras: Cameras, sim: mujoco.MjData) -> None:
        self._cameras = cameras
        self._state = SimpleNamespace(
            qpos=sim.qpos.copy(),
            qvel=sim.qvel.copy(),
            mocap_pos=sim.mocap_pos.copy(),
            mocap_quat=sim.mocap_quat.copy(),
        )
        self._images: dict[str, np.ndarray] | None = None

    def _rendered(self) -> dict[str, np.ndarray]:
        if self._images is None:
            self._images = self._cameras.render(self._state)
        return self._images

    def __getitem__(self, camera: str) -> np.ndarray:
        if camera not in self._cameras.names:
            raise KeyError(camera)
        return self._rendered()[camera]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cameras.names)

    def __len__(self) -> int:
        return len(self._cameras.names)


class Cameras:
    """Renders the configured cameras at the simulator's current state.

    Rendering reads a private `MjData`: the simulation's qpos, qvel and mocap pose are copied
    in and only the kinematics are recomputed there. The simulation's own data is never touched
    (an mj_forward on it would break the exact save/restore), and an image taken after
    `restore` shows exactly the restored state. The renderer (a GL context) is made on first
    use and released by `close`.

    `upside_down` names the cameras whose raw frames show the scene upside down (defined
    with their image "up" towards the floor); their images are turned by 180°. On a CPU
    (OSMesa) rendering dominates a state-only step's cost; EGL on a GPU (MUJOCO_GL=egl) is
    far cheaper (docs/speed.md).
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        names: tuple[str, ...],
        size: int,
        fast: bool = True,
        upside_down: frozenset[str] = frozenset(),
    ) -> None:
        allowed = [model.camera(i).name for i in range(model.ncam)]
        for name in names:
            if name not in allowed:
                raise ValueError(f"unknown camera {name!r}; the scene's cameras are {allowed}")
        if len(names) > MAX_CAMERAS or len(set(names)) != len(names):
            raise ValueError(f"cameras {names}: at most {MAX_CAMERAS} distinct names allowed")
        if size <= 0:
            raise ValueError(f"image_size {size}: must be a positive number of pixels")
        self.model = model
        self.names = names
        self.size = size
        self.fast = fast
        self.upside_down = upside_down
        self.data = mujoco.MjData(model)
        self._renderer: mujoco.Renderer | None = None

    def render(self, sim: Any) -> dict[str, np.ndarray]:
        """One uint8 (size, size, 3) image per camera, upright."""
        model = self.model
        data = self.data
        data.qpos[:], data.qvel[:] = sim.qpos, sim.qvel
        data.mocap_pos[:], data.mocap_quat[:] = sim.mocap_pos, sim.mocap_quat
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)  # camlight's tracking cameras need the subtree COMs
        mujoco.mj_camlight(model, data)  # camera and light poses
        renderer = self._renderer or self._open()
        images = {}
        for name in self.names:
            renderer.update_scene(data, camera=name)
            if self.fast:
                for flag in _SLOW_FLAGS:
                    renderer.scene.flags[flag] = 0
            image = renderer.render()
            if name in self.upside_down:
                image = np.ascontiguousarray(image[::-1, ::-1])
            images[name] = image
        return images

    def _open(self) -> mujoco.Renderer:
        # The GL context reads these when it is made; they are put back at once, so the
        # model (shared with the simulation) is left as it was.
        quality = self.model.vis.quality
        buffer = self.model.vis.global_
        saved = quality.shadowsize, quality.offsamples, buffer.offwidth, buffer.offheight
        quality.shadowsize = _SHADOW_SIZE
        quality.offsamples = 0
        buffer.offwidth, buffer.offheight = max(saved[2], self.size), max(saved[3], self.size)
        try:
            self._renderer = mujoco.Renderer(self.model, self.size, self.size)
        except Exception as e:
            raise RuntimeError(
                f"cannot create a MuJoCo renderer ({e}); MUJOCO_GL must name a backend that "
                "works here (osmesa: CPU, after `apt-get install libosmesa6`; egl: GPU) before "
                "mujoco is first imported"
                + (" (mujoco was imported before aloe.envs could set it)" if GL_LATE else "")
            ) from e
        finally:
            quality.shadowsize, quality.offsamples, buffer.offwidth, buffer.offheight = saved
        return self._renderer

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
