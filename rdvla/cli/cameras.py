"""`rdvla cameras`: list RealSense cameras, describe a recording, or record one."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from rdvla.cli.arguments import positive_float, positive_int
from rdvla.devices.cameras.realsense.config import DEFAULT_FPS, DEFAULT_HEIGHT, DEFAULT_WIDTH, NO_CAMERA_ADVICE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cameras",
        help="list RealSense cameras, describe a recording, or record one",
        description="Without options: list the connected RealSense cameras (serial, name, firmware, USB type). "
        "With --recording FILE: read a recording to its end and report its streams, resolution, frame rate, "
        "frame count and duration (exit status 2 if it is missing or corrupt). With --record FILE --serial S: "
        "record that camera for --seconds with the SDK recorder (.db3 on pyrealsense2 2.58+, .bag before); "
        "such a file can replace the camera in a setup file (`recording:`).",
    )
    action = p.add_mutually_exclusive_group()
    action.add_argument("--recording", type=Path, metavar="FILE", help="describe this .db3/.bag recording")
    action.add_argument("--record", type=Path, metavar="FILE", help="record the camera given by --serial to FILE")
    p.add_argument("--serial", help="camera to record (see the list)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --record file")
    p.add_argument("--seconds", type=positive_float, default=5.0, help="how long to record (default 5)")
    p.add_argument("--width", type=positive_int, default=DEFAULT_WIDTH, help=f"recording width (default {DEFAULT_WIDTH})")
    p.add_argument("--height", type=positive_int, default=DEFAULT_HEIGHT, help=f"recording height (default {DEFAULT_HEIGHT})")
    p.add_argument("--fps", type=positive_int, default=DEFAULT_FPS, help=f"recording frame rate (default {DEFAULT_FPS})")
    p.add_argument("--depth", action="store_true", help="record depth as well as colour")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.recording is not None:
        return _describe(args)
    if args.record is not None:
        return _record(args)
    return _list(args)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _list(args: argparse.Namespace) -> int:
    from rdvla.devices.cameras.realsense import find_cameras

    cameras = find_cameras()
    if args.json:
        _print_json([dataclasses.asdict(camera) for camera in cameras])
        return 0
    if not cameras:
        print(f"No RealSense camera found: {NO_CAMERA_ADVICE}.")
        return 0
    rows = [("SERIAL", "NAME", "FIRMWARE", "USB")] + [(c.serial, c.name, c.firmware, c.usb_type) for c in cameras]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _describe(args: argparse.Namespace) -> int:
    from rdvla.devices.cameras.realsense.recording import describe_recording

    info = describe_recording(args.recording)
    if args.json:
        _print_json({**dataclasses.asdict(info), "frame_count": info.frame_count, "span_s": info.span_s})
        return 0
    print(f"recording: {info.path}")
    print(f"camera:    {info.name} (serial {info.serial})")
    print(f"frames:    {info.frame_count}")
    print(f"duration:  {info.span_s:.3f} s of camera time (written over {info.duration_s:.3f} s)")
    print("streams:")
    for stream in info.streams:
        print(f"  {stream.profile}: {stream.frame_count} frames")
    return 0


def _record(args: argparse.Namespace) -> int:
    from rdvla.devices.cameras.realsense import RealSenseCameraConfig, open_realsense
    from rdvla.devices.cameras.realsense.streaming import FIRST_FRAME_TIMEOUT_S

    from rdvla.runtime.outputs import check_new_file

    if args.serial is None:
        raise ValueError("--record needs --serial (see `rdvla cameras` for the connected cameras)")
    check_new_file(args.record, overwrite=args.overwrite, option="--record")  # the SDK recorder would replace it
    config = RealSenseCameraConfig(
        serial=args.serial, width=args.width, height=args.height, fps=args.fps, depth=args.depth, record_to=str(args.record)
    )
    camera = open_realsense(config)
    camera.connect()
    frames = 0
    try:
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            camera.read(timeout_s=FIRST_FRAME_TIMEOUT_S)
            frames += 1
    finally:
        camera.disconnect()
    print(f"recorded {frames} frames from {args.serial} to {args.record}")
    return 0
