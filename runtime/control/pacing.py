"""Pacing of the control loop: sleeping to a deadline on an injectable clock, and a cycle timer that
keeps a fixed grid of slots, times the sections of each cycle and accounts for overruns.

Time is whatever ``clock`` returns (seconds) and passes only through ``sleep``. On the robot the pair
is ``time.monotonic`` and ``time.sleep``; a simulator that advances one control step per action, and
a test, pass a `SteppedClock`'s ``now`` and ``sleep`` instead: time then moves only when the loop
sleeps, a cycle takes no time however long the policy computes, and nothing waits in real time.

The grid: cycle ``n`` is due at ``start + n * period``. A cycle that is still working when the next
slot begins has overrun; the slots it ran into are skipped (missed), never crammed in later, so the
robot receives its commands on the grid or not at all and the action queue, which is indexed by
slot, stays aligned with time.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np

Clock = Callable[[], float]
Sleep = Callable[[float], object]

# An OS sleep on a loaded Linux machine wakes up to about a millisecond late, so the last stretch
# before a deadline is covered by short sleeps instead (they also release the GIL to the worker).
COARSE_MARGIN_S = 0.002
FINE_SLEEP_S = 0.0001

STATS_WINDOW = 8192  # samples kept per quantity for percentiles: constant memory on long runs


def sleep_until(deadline: float, clock: Clock, sleep: Sleep) -> None:
    """Return once ``clock()`` has reached ``deadline``: one coarse sleep, then short ones."""
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return
        if remaining > COARSE_MARGIN_S + FINE_SLEEP_S:
            sleep(remaining - COARSE_MARGIN_S)
        else:  # never a sleep shorter than the clock can tell apart: it would not move a fake clock
            sleep(min(remaining, FINE_SLEEP_S))


class SteppedClock:
    """Simulated seconds for a loop that must not wait in real time: ``sleep`` advances ``now`` at once.

    ``ControlLoop(..., clock=stepped.now, sleep=stepped.sleep)`` runs every cycle on its slot of the
    grid, back to back: a simulated episode runs as fast as the policy computes. A query's deadline
    is the policy's own, measured on its clock in real time: a simulator, which waits for the policy,
    sets `LoopConfig(deadlines=False)` so that every query runs its halting rule to the end.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self._now += max(0.0, seconds)


@dataclass(frozen=True)
class Stats:
    """Count, mean and max over a run, percentiles over its recent window; only `n` when empty."""

    n: int
    mean: Optional[float] = None
    p50: Optional[float] = None
    p95: Optional[float] = None
    max: Optional[float] = None

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n} if self.n == 0 else asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Stats":
        return cls(**data)


class RollingStats:
    """Count, mean and max over everything added; percentiles over the last ``window`` values."""

    def __init__(self, window: int = STATS_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        self._values = np.empty(window, np.float64)  # allocated once: memory does not grow with the run
        self._count = 0
        self._sum = 0.0
        self._max = -math.inf

    def add(self, value: float) -> None:
        self._values[self._count % self._values.size] = value
        self._count += 1
        self._sum += value
        if value > self._max:
            self._max = value

    def summary(self, scale: float = 1.0, digits: int = 3) -> Stats:
        """The statistics, each multiplied by ``scale`` (e.g. 1000 for seconds -> ms)."""
        if self._count == 0:
            return Stats(0)
        recent = self._values[: min(self._count, self._values.size)]
        p50, p95 = np.percentile(recent, [50, 95])
        return Stats(
            n=self._count,
            mean=round(self._sum / self._count * scale, digits),
            p50=round(float(p50) * scale, digits),
            p95=round(float(p95) * scale, digits),
            max=round(self._max * scale, digits),
        )


@dataclass(frozen=True)
class CycleReport:
    """How one cycle went, as known when it ended."""

    slot: int
    work_s: float  # from the slot's due time to the end of the cycle's work
    overrun_s: float  # work beyond the period (0 when on time)
    missed_slots: int  # slots skipped because of the overrun


@dataclass(frozen=True)
class TimerSummary:
    overruns: int
    missed_slots: int
    max_overrun_ms: float
    cycle_work_ms: Stats
    sections_ms: dict[str, Stats]


class CycleTimer:
    """Paces cycles on a fixed grid of ``period_s``; times named sections; counts overruns."""

    def __init__(self, period_s: float, clock: Clock, sleep: Sleep, window: int = STATS_WINDOW) -> None:
        if not (period_s > 0 and math.isfinite(period_s)):
            raise ValueError(f"the control period must be a positive number of seconds, got {period_s}")
        self.period_s = period_s
        self.clock = clock
        self.sleep = sleep
        self._window = window
        self._origin = 0.0
        self.slot = 0
        self.cycles = 0
        self.overruns = 0
        self.missed_slots = 0
        self.max_overrun_s = 0.0
        self.work = RollingStats(window)
        self.sections: dict[str, RollingStats] = {}
        self.current: dict[str, float] = {}  # section -> seconds, for the cycle in progress
        self._started = False

    def start(self) -> None:
        """The grid begins now: slot 0 is due immediately."""
        self._origin = self.clock()
        self.slot = 0
        self.current = {}
        self._started = True

    def due(self, slot: int) -> float:
        return self._origin + slot * self.period_s

    def elapsed(self) -> float:
        """Seconds since the current slot was due (waking up late counts against the cycle)."""
        return self.clock() - self.due(self.slot)

    def late(self) -> bool:
        """Whether the current cycle has already run into the next slot."""
        return self.elapsed() > self.period_s

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = self.clock()
        try:
            yield
        finally:
            spent = self.clock() - start
            self.current[name] = self.current.get(name, 0.0) + spent
            stats = self.sections.get(name)
            if stats is None:
                stats = self.sections[name] = RollingStats(self._window)
            stats.add(spent)

    def finish(self) -> CycleReport:
        """End the current cycle: account for it, then sleep until the next free slot is due."""
        if not self._started:
            raise RuntimeError("CycleTimer.finish() before start()")
        now = self.clock()
        work = now - self.due(self.slot)
        overrun = max(0.0, now - self.due(self.slot + 1))
        next_slot = self.slot + 1
        while self.due(next_slot) < now:  # skip every slot whose due time has passed
            next_slot += 1
        missed = next_slot - self.slot - 1
        self.cycles += 1
        self.work.add(work)
        if overrun > 0:
            self.overruns += 1
            self.missed_slots += missed
            self.max_overrun_s = max(self.max_overrun_s, overrun)
        report = CycleReport(self.slot, work, overrun, missed)
        sleep_until(self.due(next_slot), self.clock, self.sleep)
        self.slot = next_slot
        self.current = {}
        return report

    def summary(self) -> TimerSummary:
        return TimerSummary(
            overruns=self.overruns,
            missed_slots=self.missed_slots,
            max_overrun_ms=round(self.max_overrun_s * 1e3, 3),
            cycle_work_ms=self.work.summary(1e3),
            sections_ms={name: stats.summary(1e3) for name, stats in self.sections.items()},
        )
