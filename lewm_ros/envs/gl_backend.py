"""Which OpenGL platform MuJoCo should render offscreen with on a machine without a display.

MuJoCo reads MUJOCO_GL once, when it is imported, and defaults to GLFW, which needs a display: a headless
machine must pick before the first `import mujoco`.
"""

from __future__ import annotations

from ctypes.util import find_library


def headless_gl_backend() -> str | None:
    """EGL when its library is installed (GPU drivers or Mesa), else OSMesa (software), else None: rendering
    then fails with a message naming MUJOCO_GL."""
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if find_library(library):
            return backend
    return None
