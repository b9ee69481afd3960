"""What a RealSense offers and which of it a camera uses: connected devices, stream profiles, exposure."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Optional

from rdvla.devices.cameras.base import UnsupportedProfileError
from rdvla.devices.cameras.realsense.config import DEFAULT_FPS, DEFAULT_HEIGHT, DEFAULT_WIDTH
from rdvla.devices.cameras.realsense.sdk import camera_info, import_rs

COLOR_FORMATS = ("rgb8", "bgr8")  # preferred first


@dataclass(frozen=True)
class CameraInfo:
    serial: str
    name: str
    firmware: str
    usb_type: str
    product_line: str


@dataclass(frozen=True)
class StreamProfile:
    stream: str  # "color" or "depth"
    format: str
    width: int
    height: int
    fps: int

    def __str__(self) -> str:
        return f"{self.stream} {self.width}x{self.height}@{self.fps} {self.format}"


def find_cameras() -> list[CameraInfo]:
    """Every connected RealSense; an empty list when there is none."""
    rs = import_rs()
    found = []
    for device in rs.context().query_devices():
        found.append(
            CameraInfo(
                serial=camera_info(rs, device, "serial_number"),
                name=camera_info(rs, device, "name"),
                firmware=camera_info(rs, device, "firmware_version"),
                usb_type=camera_info(rs, device, "usb_type_descriptor"),
                product_line=camera_info(rs, device, "product_line"),
            )
        )
    return found


def describe_profile(profile: Any) -> StreamProfile:
    video = profile.as_video_stream_profile()
    return StreamProfile(profile.stream_type().name, profile.format().name, video.width(), video.height(), profile.fps())


def video_profiles(device: Any) -> list[tuple[int, Any]]:
    """(sensor index, profile) for every colour and depth video profile the device offers."""
    out = []
    for index, sensor in enumerate(device.query_sensors()):
        for profile in sensor.get_stream_profiles():
            if profile.is_video_stream_profile() and profile.stream_type().name in ("color", "depth"):
                out.append((index, profile))
    return out


def _offered(profiles: list[tuple[int, Any]], stream: str, formats: tuple[str, ...]) -> str:
    by_size: dict[tuple[int, int, str], set[int]] = collections.defaultdict(set)
    for _, profile in profiles:
        p = describe_profile(profile)
        if p.stream == stream and p.format in formats:
            by_size[(p.width, p.height, p.format)].add(p.fps)
    if not by_size:
        return "none"
    return ", ".join(
        f"{w}x{h}@{'/'.join(str(f) for f in sorted(fps))} {fmt}" for (w, h, fmt), fps in sorted(by_size.items())
    )


@dataclass(frozen=True)
class ProfileSelection:
    color: tuple[int, Any]  # (sensor index, profile)
    depth: Optional[tuple[int, Any]]


def select_profiles(
    device: Any, name: str, width: Optional[int], height: Optional[int], fps: Optional[int], depth: bool, recorded: bool
) -> ProfileSelection:
    """Pick the colour (and depth) profiles matching the request; the error lists what is offered."""
    profiles = video_profiles(device)

    def matches(profile: Any, stream: str, formats: tuple[str, ...], size: Optional[tuple[int, int]], rate: Optional[int]) -> bool:
        p = describe_profile(profile)
        return (
            p.stream == stream
            and p.format in formats
            and (size is None or (p.width, p.height) == size)
            and (rate is None or p.fps == rate)
        )

    size = (width, height) if width is not None and height is not None else None
    if not recorded:
        size = size or (DEFAULT_WIDTH, DEFAULT_HEIGHT)
        fps = fps or DEFAULT_FPS
    colors = [(i, p) for i, p in profiles if matches(p, "color", COLOR_FORMATS, size, fps)]
    if not colors:
        wanted = f"{size[0]}x{size[1]}" if size else "any size"
        raise UnsupportedProfileError(
            f"camera {name} offers no colour stream at {wanted}@{fps or 'any'} fps; "
            f"colour profiles offered: {_offered(profiles, 'color', COLOR_FORMATS)}"
        )
    colors.sort(key=lambda item: COLOR_FORMATS.index(describe_profile(item[1]).format))
    color = colors[0]
    if not depth:
        return ProfileSelection(color, None)
    chosen = describe_profile(color[1])
    depth_size = size if size is not None else (chosen.width, chosen.height)
    depths = [(i, p) for i, p in profiles if matches(p, "depth", ("z16",), depth_size if not recorded else None, chosen.fps)]
    if not depths:
        raise UnsupportedProfileError(
            f"camera {name} offers no depth stream at {depth_size[0]}x{depth_size[1]}@{chosen.fps} fps "
            f"(depth must match the colour rate); depth profiles offered: {_offered(profiles, 'depth', ('z16',))}"
        )
    return ProfileSelection(color, depths[0])


def apply_exposure(rs: ModuleType, sensor: Any, name: str, exposure: float) -> None:
    if not sensor.supports(rs.option.exposure):
        raise UnsupportedProfileError(f"camera {name}: the colour sensor has no manual exposure")
    allowed = sensor.get_option_range(rs.option.exposure)
    if not allowed.min <= exposure <= allowed.max:
        raise UnsupportedProfileError(
            f"camera {name}: exposure {exposure:g} outside the supported range "
            f"{allowed.min:g}..{allowed.max:g} (step {allowed.step:g}, default {allowed.default:g})"
        )
    if sensor.supports(rs.option.enable_auto_exposure):
        sensor.set_option(rs.option.enable_auto_exposure, 0)
    sensor.set_option(rs.option.exposure, float(exposure))
