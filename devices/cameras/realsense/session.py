"""One opening of a RealSense device: the sensors started on it, its frames paired and converted.

The SDK delivers colour and depth frames through sensor callbacks, separately; they are queued here,
paired by device timestamp, and depth is aligned to colour with rs.align before a `Frame` is made.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Deque, Optional

import numpy as np

from rdvla.devices.cameras.base import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawFrame:
    host_time_s: float
    timestamp_ms: float
    frame: Any  # rs.frame, kept alive until paired and converted


def pop_pair(
    colors: Deque[RawFrame], depths: Optional[Deque[RawFrame]], tolerance_ms: float
) -> Optional[tuple[RawFrame, Optional[RawFrame]]]:
    """The oldest colour frame with its depth partner (timestamps within tolerance), dropping orphans.

    Both queues are in arrival order, so a head older than the other queue's head by more than the
    tolerance can never find a partner and is dropped.
    """
    if depths is None:
        return (colors.popleft(), None) if colors else None
    while colors and depths:
        gap = colors[0].timestamp_ms - depths[0].timestamp_ms
        if abs(gap) <= tolerance_ms:
            return colors.popleft(), depths.popleft()
        dropped = depths.popleft() if gap > 0 else colors.popleft()
        log.debug("dropped an unpaired frame at %.3f ms", dropped.timestamp_ms)
    return None


class Composer:
    """Makes one frameset out of a colour and a depth frame, which is what rs.align consumes."""

    def __init__(self, rs: ModuleType) -> None:
        self._pending: list[Any] = []
        self._block = rs.processing_block(self._compose)
        self._out = rs.frame_queue(1)
        self._block.start(self._out)

    def _compose(self, _frame: Any, source: Any) -> None:
        source.frame_ready(source.allocate_composite_frame(self._pending))

    def __call__(self, color: Any, depth: Any) -> Any:
        self._pending = [depth, color]
        self._block.invoke(color)
        return self._out.wait_for_frame(1000).as_frameset()


@dataclass
class Session:
    """One opening of the device: what must be stopped and released on close."""

    device: Any
    sensors: list[Any]
    playback: Optional[Any]
    recorder: Optional[Any]
    depth_scale: float
    bgr: bool
    tolerance_ms: float
    align: Optional[Any] = None
    composer: Optional[Composer] = None
    closed: bool = False  # released: late SDK callbacks are ignored
    stopped: bool = False  # playback reached the end of the file
    paused: bool = False
    delivered: int = 0  # frames made from this opening
    colors: Deque[RawFrame] = field(default_factory=collections.deque)
    depths: Optional[Deque[RawFrame]] = None


def convert(session: Session, color: RawFrame, depth: Optional[RawFrame], host_time_s: float, camera: str) -> Frame:
    """A paired colour (+ depth) frame as the `Frame` the control loop reads; copies out of SDK memory."""
    color_frame = color.frame
    depth_image = None
    if depth is not None:
        depth_frame = depth.frame
        if session.composer is not None and session.align is not None:
            aligned = session.align.process(session.composer(color_frame, depth_frame))
            depth_frame = aligned.get_depth_frame()
        depth_image = np.array(np.asanyarray(depth_frame.get_data()), dtype=np.uint16, copy=True)
    image = np.array(np.asanyarray(color_frame.get_data()), dtype=np.uint8, copy=True)
    if session.bgr:
        image = np.ascontiguousarray(image[..., ::-1])
    return Frame(
        image=image,
        depth=depth_image,
        depth_scale=session.depth_scale if depth is not None else 0.0,
        timestamp_ms=color.timestamp_ms,
        timestamp_domain=color_frame.get_frame_timestamp_domain().name,
        frame_number=int(color_frame.get_frame_number()),
        host_time_s=host_time_s,
        camera=camera,
    )
