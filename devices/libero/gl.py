"""The OpenGL backend the simulator renders with, chosen before mujoco is imported.

mujoco and robosuite read `MUJOCO_GL` once, at import (robosuite/utils/binding_utils.py picks its
render context from it), so the choice must be made first. A user's `MUJOCO_GL` is respected; otherwise
EGL (Mesa's, which also renders on a machine without a GPU through llvmpipe), then OSMesa. Without
either library the simulator cannot render and the user is told which package to install.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

# (MUJOCO_GL value, PyOpenGL platform, the library it loads, the Debian/Ubuntu packages that provide it)
BACKENDS = (
    ("egl", "egl", "EGL", "libegl1 libegl-mesa0 libgl1-mesa-dri"),
    ("osmesa", "osmesa", "OSMesa", "libosmesa6"),
)


class GLUnavailableError(RuntimeError):
    """No OpenGL backend the simulator can render with."""


def _loadable(library: str) -> bool:
    path = ctypes.util.find_library(library)
    if path is None:
        return False
    try:
        ctypes.CDLL(path)
    except OSError:
        return False
    return True


def choose_gl_backend() -> str:
    """Set MUJOCO_GL (and PYOPENGL_PLATFORM) to a backend that loads here and return its name."""
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        return chosen
    for name, platform, library, _ in BACKENDS:
        if _loadable(library):
            os.environ["MUJOCO_GL"] = name
            os.environ.setdefault("PYOPENGL_PLATFORM", platform)
            log.info("simulator renders with %s", name)
            return name
    packages = " or ".join(f"`apt-get install {packages}`" for _, _, _, packages in BACKENDS)
    raise GLUnavailableError(f"no OpenGL library for off-screen rendering (EGL or OSMesa) was found; {packages}")
