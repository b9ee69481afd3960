"""Support for tests of code built on devices/: a clock that moves only when told to.

Every time-dependent piece here (camera staleness, reconnect backoff, bridge link state, SimRobot
rate limits) takes a ``clock`` callable; pass a FakeClock to decide time by hand.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class FakeClock:
    """Seconds that advance only through ``advance`` (thread-safe, so capture threads may read it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


def wait_until(condition: Callable[[], bool], timeout_s: float = 3.0, poll_s: float = 0.005) -> bool:
    """Poll ``condition`` in real time until it holds or ``timeout_s`` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()
