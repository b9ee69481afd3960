"""What is inside a RealSense recording: streams, sizes, rates, frame counts, duration.

Counting frames means reading the whole file once through the SDK's playback (not in real time),
which also proves the file is readable to its end.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdvla.devices.cameras.base import RecordingError
from rdvla.devices.cameras.realsense.profiles import StreamProfile, describe_profile, video_profiles
from rdvla.devices.cameras.realsense.sdk import camera_info, import_rs, load_recording, one_line

# A file that stalls mid-way this long (no frame, not at its end) is treated as broken.
STALL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class StreamSummary:
    profile: StreamProfile
    frame_count: int
    first_timestamp_ms: float
    last_timestamp_ms: float


@dataclass(frozen=True)
class RecordingInfo:
    path: Path
    serial: str
    name: str
    duration_s: float  # recorded wall time, from the file
    streams: tuple[StreamSummary, ...]

    @property
    def frame_count(self) -> int:
        """Colour frames (the stream the policy sees); the largest stream count if there is no colour."""
        for stream in self.streams:
            if stream.profile.stream == "color":
                return stream.frame_count
        return max((s.frame_count for s in self.streams), default=0)

    @property
    def span_s(self) -> float:
        """Camera time covered by the first stream: first to last timestamp plus one frame period."""
        first = self.streams[0]
        return (first.last_timestamp_ms - first.first_timestamp_ms) / 1000.0 + 1.0 / first.profile.fps


def describe_recording(path: str | os.PathLike[str]) -> RecordingInfo:
    """Read a recording to its end and summarise it; RecordingError if it is missing or broken."""
    rs = import_rs()
    context = rs.context()
    playback = load_recording(rs, context, path)
    try:
        return _describe(rs, playback, Path(path))
    except RuntimeError as exc:
        if isinstance(exc, RecordingError):
            raise
        raise RecordingError(f"cannot read recording {path} (corrupt or truncated?): {one_line(exc)}") from exc


def _describe(rs: Any, device: Any, path: Path) -> RecordingInfo:
    playback = device.as_playback()
    playback.set_real_time(False)
    playback.pause()
    lock = threading.Lock()
    done = threading.Event()
    seen: dict[int, list[float]] = {}  # profile unique id -> timestamps
    profiles: dict[int, StreamProfile] = {}

    def on_frame(frame: Any) -> None:
        with lock:
            seen.setdefault(frame.profile.unique_id(), []).append(frame.get_timestamp())

    def on_status(status: Any) -> None:
        if status == rs.playback_status.stopped:
            done.set()

    playback.set_status_changed_callback(on_status)
    sensors: dict[int, list[Any]] = {}
    for index, profile in video_profiles(device):
        sensors.setdefault(index, []).append(profile)
        profiles[profile.unique_id()] = describe_profile(profile)
    if not profiles:
        raise RecordingError(f"{path.name}: the recording holds no colour or depth stream")
    all_sensors = device.query_sensors()
    started = []
    try:
        for index, chosen in sensors.items():
            all_sensors[index].open(chosen if len(chosen) > 1 else chosen[0])
            all_sensors[index].start(on_frame)
            started.append(all_sensors[index])
        playback.resume()
        last_total = -1
        while not done.wait(STALL_TIMEOUT_S):
            with lock:
                total = sum(len(v) for v in seen.values())
            if total == last_total:
                raise RecordingError(f"{path.name}: playback stalled after {total} frames (corrupt file?)")
            last_total = total
    finally:
        for sensor in started:
            sensor.stop()
            sensor.close()
    streams = tuple(
        StreamSummary(profiles[uid], len(stamps), min(stamps) if stamps else 0.0, max(stamps) if stamps else 0.0)
        for uid, stamps in sorted(seen.items(), key=lambda item: profiles[item[0]].stream != "color")
    )
    if not streams:
        raise RecordingError(f"{path.name}: the recording holds no frames")
    return RecordingInfo(
        path=path,
        serial=camera_info(rs, device, "serial_number"),
        name=camera_info(rs, device, "name"),
        duration_s=playback.get_duration().total_seconds(),
        streams=streams,
    )
