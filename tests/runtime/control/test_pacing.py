"""Sleeping to a deadline, the cycle grid, overrun accounting and the rolling statistics (fake clock)."""

from __future__ import annotations

import numpy as np
import pytest

from rdvla.devices.testing import FakeClock
from rdvla.runtime.control.pacing import COARSE_MARGIN_S, CycleTimer, RollingStats, Stats, sleep_until


class RecordingSleep:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.clock.advance(seconds)


def test_sleep_until_sleeps_coarsely_then_finely_and_never_past_the_deadline() -> None:
    clock = FakeClock(start=10.0)
    sleep = RecordingSleep(clock)
    sleep_until(10.1, clock, sleep)
    assert clock() == pytest.approx(10.1, abs=1e-12)
    assert sleep.calls[0] == pytest.approx(0.1 - COARSE_MARGIN_S)
    assert len(sleep.calls) > 2 and all(s <= COARSE_MARGIN_S + 1e-12 for s in sleep.calls[1:])
    sleep.calls.clear()
    sleep_until(10.05, clock, sleep)  # already past: no sleep at all
    assert sleep.calls == []


def test_on_time_cycles_land_on_the_grid_without_overruns() -> None:
    clock = FakeClock()
    timer = CycleTimer(0.1, clock, clock.advance)
    timer.start()
    origin = clock()
    for expected in range(5):
        assert timer.slot == expected
        assert clock() == pytest.approx(origin + 0.1 * expected)
        clock.advance(0.03)
        report = timer.finish()
        assert (report.overrun_s, report.missed_slots) == (0.0, 0)
        assert report.work_s == pytest.approx(0.03)
    assert (timer.cycles, timer.overruns, timer.missed_slots) == (5, 0, 0)


def test_an_overrun_skips_the_slots_it_ran_into_and_is_counted() -> None:
    clock = FakeClock()
    timer = CycleTimer(0.1, clock, clock.advance)
    timer.start()
    origin = clock()
    clock.advance(0.25)  # 2.5 periods of work: slots 1 and 2 are gone
    report = timer.finish()
    assert report.overrun_s == pytest.approx(0.15)
    assert report.missed_slots == 2
    assert timer.slot == 3 and clock() == pytest.approx(origin + 0.3)
    clock.advance(0.1)  # exactly one period of work is on time
    assert timer.finish().missed_slots == 0
    assert (timer.overruns, timer.missed_slots) == (1, 2)
    assert timer.summary().max_overrun_ms == pytest.approx(150.0)


def test_sections_are_timed_per_cycle_and_summarised() -> None:
    clock = FakeClock()
    timer = CycleTimer(0.1, clock, clock.advance)
    timer.start()
    for spent in (0.01, 0.02, 0.03):
        with timer.section("infer"):
            clock.advance(spent)
        with timer.section("send"):
            clock.advance(0.001)
        assert timer.current["infer"] == pytest.approx(spent)
        timer.finish()
    summary = timer.summary().sections_ms
    assert summary["infer"].n == 3 and summary["infer"].max == pytest.approx(30.0)
    assert summary["send"].p50 == pytest.approx(1.0)
    assert timer.current == {}


def test_finish_before_start_is_refused() -> None:
    clock = FakeClock()
    with pytest.raises(RuntimeError, match="before start"):
        CycleTimer(0.1, clock, clock.advance).finish()
    with pytest.raises(ValueError, match="positive"):
        CycleTimer(0.0, clock, clock.advance)


def test_rolling_stats_keep_all_time_count_mean_max_and_recent_percentiles() -> None:
    stats = RollingStats(window=100)
    values = np.arange(1000, dtype=float)
    for v in values:
        stats.add(v)
    s = stats.summary()
    assert s.n == 1000 and s.mean == pytest.approx(values.mean()) and s.max == 999.0
    assert s.p50 == pytest.approx(np.percentile(values[-100:], 50))  # the window: the last 100 values
    assert stats.summary(scale=1e3).max == pytest.approx(999e3)
    assert RollingStats().summary() == Stats(0)
