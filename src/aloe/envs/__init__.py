"""The simulators: `base` (the protocol, the shared settings, the row type), `registry` (the
`BACKENDS` table) and one module per simulator.

MuJoCo picks its GL backend when it is imported, so it is chosen here, before any module of
this package imports mujoco: headless (no display), render on the CPU with OSMesa where it is
installed (a GPU machine sets MUJOCO_GL=egl). Without libOSMesa, MUJOCO_GL=osmesa would make
`import mujoco` itself fail, and state-only runs need no renderer.
"""

import ctypes.util
import os
import sys

GL_LATE = "mujoco" in sys.modules and "MUJOCO_GL" not in os.environ
"""mujoco was imported before this package could choose its GL backend."""
if not os.environ.get("DISPLAY") and ctypes.util.find_library("OSMesa"):
    os.environ.setdefault("MUJOCO_GL", "osmesa")
