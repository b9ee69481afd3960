"""What a RealSense camera is asked for: a live camera by serial, or a recording in its place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from rdvla.devices.setup_fields import ConfigError, Fields

DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_FPS = 640, 480, 30
# What to check when the SDK lists no camera (`rdvla cameras`, `rdvla doctor`).
NO_CAMERA_ADVICE = ("check the USB 3 cable and port, the udev rules (librealsense's 99-realsense-libusb.rules), "
                    "and that no other program holds the camera")


@dataclass(frozen=True)
class RealSenseCameraConfig:
    serial: Optional[str] = None  # live camera to open
    recording: Optional[str] = None  # play this .db3/.bag instead of a live camera
    role: str = "third_person"
    width: Optional[int] = None  # None: 640x480 live, the recorded size in playback
    height: Optional[int] = None
    fps: Optional[int] = None  # None: 30 live, the recorded rate in playback
    depth: bool = False
    align_depth: bool = True  # depth resampled onto the colour image
    exposure: Optional[float] = None  # colour exposure in the sensor's units; None keeps auto exposure
    real_time: bool = True  # playback only: recorded pace (True) or frame by frame (False)
    record_to: Optional[str] = None  # live only: also record the streams with the SDK recorder
    frame_timeout_s: float = 1.0  # live: this long without a frame means disconnected (first frame: 5 s)
    reconnect_initial_s: float = 0.1
    reconnect_max_s: float = 2.0

    def __post_init__(self) -> None:
        if (self.serial is None) == (self.recording is None):
            raise ValueError("a camera needs exactly one of serial (live) or recording (playback)")
        if self.record_to is not None and self.recording is not None:
            raise ValueError("record_to applies to live cameras, not to playback of a recording")
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or neither")
        for name in ("width", "height", "fps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.frame_timeout_s <= 0 or self.reconnect_initial_s <= 0 or self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("timeouts must be positive and reconnect_max_s >= reconnect_initial_s")

    # The fields a setup file may give a camera of `type: realsense` (durations in milliseconds there).
    SETUP_FIELDS: ClassVar[tuple[str, ...]] = (
        "serial", "recording", "width", "height", "fps", "depth", "align_depth", "exposure", "real_time", "frame_timeout_ms",
    )

    @classmethod
    def from_setup(cls, fields: Fields, role: str, base_dir: Path) -> "RealSenseCameraConfig":
        """The camera one entry of a setup file describes; a recording's path is relative to the file."""
        serial = fields.string("serial", hint=" (quote serial numbers in YAML)")
        recording = fields.string("recording")
        if (serial is None) == (recording is None):
            raise ConfigError(f"{fields.path}: give exactly one of serial (a live camera) or recording (a file)")
        if recording is not None and not Path(recording).is_absolute():
            recording = str(base_dir / recording)
        width, height = fields.optional_number("width", integer=True), fields.optional_number("height", integer=True)
        if (width is None) != (height is None):
            raise ConfigError(f"{fields.where('width' if width is None else 'height')}: give width and height together")
        if fields.raw("real_time", False) is not None and recording is None:
            raise ConfigError(f"{fields.where('real_time')}: only applies to a recording")
        return cls(
            serial=serial,
            recording=recording,
            role=role,
            width=width,
            height=height,
            fps=fields.optional_number("fps", integer=True),
            depth=fields.boolean("depth", False),
            align_depth=fields.boolean("align_depth", True),
            exposure=fields.optional_number("exposure"),
            real_time=fields.boolean("real_time", True),
            frame_timeout_s=fields.number("frame_timeout_ms", 1000.0) / 1000.0,
        )

    @property
    def name(self) -> str:
        return self.serial if self.serial is not None else Path(str(self.recording)).name
