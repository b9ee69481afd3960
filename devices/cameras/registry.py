"""Camera types by name: a setup file's camera `type:` picks the config class and what opens it.

The control loop and the setup file never name a camera class: `make_camera(config)` looks the
config's class up here. A new kind of camera registers its config class and an opener.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from rdvla.devices.cameras.base import Camera, Clock
from rdvla.devices.cameras.realsense import RealSenseCameraConfig, open_realsense

Opener = Callable[..., Camera]  # (config, *, clock) -> a camera, not yet connected


@dataclass(frozen=True)
class CameraType:
    name: str  # what a setup file writes as `type:`
    config: type
    open: Opener


CAMERA_TYPES: dict[str, CameraType] = {}


def register_camera_type(name: str, config: type, open: Opener) -> None:
    if name in CAMERA_TYPES:
        raise ValueError(f"camera type {name!r} is already registered")
    CAMERA_TYPES[name] = CameraType(name, config, open)


def camera_type(name: str) -> CameraType:
    if name not in CAMERA_TYPES:
        raise ValueError(f"unknown camera type {name!r}; known: {', '.join(sorted(CAMERA_TYPES))}")
    return CAMERA_TYPES[name]


def make_camera(config: Any, *, clock: Clock = time.monotonic) -> Camera:
    """The camera `config` describes, not yet connected."""
    for kind in CAMERA_TYPES.values():
        if type(config) is kind.config:
            return kind.open(config, clock=clock)
    raise ValueError(f"no camera type is registered for {type(config).__name__}")


register_camera_type("realsense", RealSenseCameraConfig, open_realsense)
