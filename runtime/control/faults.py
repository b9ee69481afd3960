"""The faults of a control cycle, and the loop's reaction to them.

Every part of a cycle (observe, the chunk broker, the safety decision, the robot command) records
what went wrong in the one `FaultLog` of the run; at the end of the cycle the log hands the
cycle's faults to the `FaultMonitor`, which decides:

| fault | reaction |
|---|---|
| stale_observation, skewed_observation, camera_error | hold; stop after ``max_consecutive_faults`` in a row |
| inference_error, nonfinite_action, overrun, starved | hold; stop after ``max_consecutive_faults`` in a row |
| camera_disconnected | hold while the camera reconnects; stop after ``max_reconnect_s`` |
| robot_timeout, robot_error | stop at once |
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass, field
from typing import Optional

from rdvla.devices.cameras.base import CameraError
from rdvla.devices.robots.base import RobotError
from rdvla.runtime.control.safety import SafetyConfig

log = logging.getLogger(__name__)

FAULT_LOG_INTERVAL_S = 5.0  # a recurring fault is logged at most this often (with a count), not every cycle


class Fault(str, enum.Enum):
    STALE_OBSERVATION = "stale_observation"
    SKEWED_OBSERVATION = "skewed_observation"
    CAMERA_ERROR = "camera_error"
    CAMERA_DISCONNECTED = "camera_disconnected"
    INFERENCE_ERROR = "inference_error"
    NONFINITE_ACTION = "nonfinite_action"
    OVERRUN = "overrun"
    STARVED = "starved"
    ROBOT_TIMEOUT = "robot_timeout"
    ROBOT_ERROR = "robot_error"


STOP_AT_ONCE = frozenset({Fault.ROBOT_TIMEOUT, Fault.ROBOT_ERROR})
# A camera that is reconnecting is expected to be away for a while: it has its own time limit.
COUNTED = frozenset(Fault) - STOP_AT_ONCE - {Fault.CAMERA_DISCONNECTED}


def one_line(exc: BaseException) -> str:
    """A failure as one line of a fault's detail; device errors are worded for the user already."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (CameraError, RobotError)) else f"{type(exc).__name__}: {text}"


@dataclass
class FaultMonitor:
    """Counts faults (in total, and in a row per kind) and says when the loop must stop."""

    config: SafetyConfig
    totals: dict[str, int] = field(default_factory=dict)
    in_a_row: dict[Fault, int] = field(default_factory=dict)
    disconnected_since: Optional[float] = None

    def update(self, faults: set[Fault], now: float) -> Optional[str]:
        """Record one step's faults; returns why the loop must stop, or None."""
        for fault in faults:
            self.totals[fault.value] = self.totals.get(fault.value, 0) + 1
        for fault in COUNTED:
            self.in_a_row[fault] = self.in_a_row.get(fault, 0) + 1 if fault in faults else 0
        if Fault.CAMERA_DISCONNECTED in faults:
            if self.disconnected_since is None:
                self.disconnected_since = now
        else:
            self.disconnected_since = None
        for fault in sorted(faults & STOP_AT_ONCE):
            return fault.value
        for fault, count in sorted(self.in_a_row.items()):
            if count >= self.config.max_consecutive_faults:
                return f"{fault.value} in {count} consecutive steps"
        if self.disconnected_since is not None and now - self.disconnected_since >= self.config.max_reconnect_s:
            return f"camera disconnected for {now - self.disconnected_since:.1f} s"
        return None


class FaultLog:
    """The faults of the cycle in progress (`add`, `current`), and the run's reaction to them (`end_cycle`)."""

    def __init__(self, config: SafetyConfig) -> None:
        self.monitor = FaultMonitor(config)
        self.current: list[tuple[Fault, str]] = []
        self._reported: dict[Fault, tuple[float, int]] = {}  # last report time, occurrences not reported since

    def add(self, fault: Fault, detail: str) -> None:
        self.current.append((fault, detail))

    def __bool__(self) -> bool:
        """Whether the cycle in progress has a fault."""
        return bool(self.current)

    def has(self, faults: frozenset[Fault]) -> bool:
        return any(fault in faults for fault, _ in self.current)

    @property
    def totals(self) -> dict[str, int]:
        return self.monitor.totals

    def end_cycle(self, step: int, now: float) -> Optional[str]:
        """Log the cycle's faults (a recurring one at most every FAULT_LOG_INTERVAL_S), start the next
        cycle empty, and return why the loop must stop, or None."""
        reason = self.monitor.update({fault for fault, _ in self.current}, now)
        for fault, detail in self.current:
            last, unreported = self._reported.get(fault, (-math.inf, 0))
            if now - last >= FAULT_LOG_INTERVAL_S:
                since = f" (and {unreported} more in the last {now - last:.0f} s)" if unreported else ""
                log.warning("step %d: %s: %s%s", step, fault.value, detail, since)
                self._reported[fault] = (now, 0)
            else:
                self._reported[fault] = (last, unreported + 1)
        self.current = []
        if reason is not None:
            log.error("stopping: %s", reason)
        return reason
