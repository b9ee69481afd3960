"""Camera kinds by name: a setup file's camera `type:` picks the config class and what opens it.

The control loop, the setup file and the commands never name a camera class: they ask the kind.
A camera kind registers itself in its own package (`register_camera_type(CameraType(...))`, e.g.
devices/cameras/realsense/); the registry imports the built-in kinds (`BUILT_IN`, one list of
module names) the first time it is asked, and nothing camera-specific otherwise.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rdvla.devices.cameras.base import Camera, Clock

BUILT_IN = ("rdvla.devices.cameras.realsense",)

Opener = Callable[..., Camera]  # (config, *, clock) -> a camera, not yet connected


@dataclass(frozen=True)
class CameraType:
    """A camera kind: its config class, what opens it, and how it records and replays."""

    name: str  # what a setup file writes as `type:`
    config: type  # has `role`, `recording` (a file played instead of the camera, or None) and `SETUP_FIELDS`
    open: Opener
    recording_suffixes: tuple[str, ...]  # the recording files this kind plays
    recording_suffix: Callable[[], str]  # the suffix a live camera of this kind records into now
    replay: Callable[[Path, str, bool], Any]  # (recording, role, real_time) -> a config that plays the recording
    record_into: Callable[[Any, Path], Any]  # (live config, file) -> the same camera, also recording into the file
    describe: Callable[[Any], str]  # a live camera's config in a few words, e.g. "live camera 123456"


CAMERA_TYPES: dict[str, CameraType] = {}
_loaded = False


def register_camera_type(kind: CameraType) -> None:
    if kind.name in CAMERA_TYPES:
        raise ValueError(f"camera type {kind.name!r} is already registered")
    CAMERA_TYPES[kind.name] = kind


def _load_built_in() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILT_IN:
            importlib.import_module(module)


def camera_type(name: str) -> CameraType:
    _load_built_in()
    if name not in CAMERA_TYPES:
        raise ValueError(f"unknown camera type {name!r}; known: {', '.join(sorted(CAMERA_TYPES))}")
    return CAMERA_TYPES[name]


def kind_of(config: Any) -> CameraType:
    """The kind whose config `config` is."""
    _load_built_in()
    for kind in CAMERA_TYPES.values():
        if type(config) is kind.config:
            return kind
    raise ValueError(f"no camera type is registered for {type(config).__name__}")


def kind_playing(recording: Path) -> CameraType:
    """The kind that plays a recording file, by its suffix."""
    _load_built_in()
    for kind in CAMERA_TYPES.values():
        if recording.suffix in kind.recording_suffixes:
            return kind
    known = sorted(suffix for kind in CAMERA_TYPES.values() for suffix in kind.recording_suffixes)
    raise ValueError(f"{recording}: no camera type plays {recording.suffix or 'files without a suffix'}; "
                     f"recordings are {'/'.join(known)} files")


def make_camera(config: Any, *, clock: Clock = time.monotonic) -> Camera:
    """The camera `config` describes, not yet connected."""
    return kind_of(config).open(config, clock=clock)
