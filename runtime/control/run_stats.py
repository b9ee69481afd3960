"""What a run's summary reports, accumulated step by step in constant memory."""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from rdvla.runtime.control.pacing import STATS_WINDOW, RollingStats, TimerSummary
from rdvla.runtime.control.records import Decision, IterationSummary, QueryRecord, RunSummary, StepRecord
from rdvla.runtime.control.subscriber import Subscriber

MAX_TRACKED_ITERATIONS = 256  # the iteration histogram has at most this many keys


class RunStats(Subscriber):
    """What the summary reports, accumulated step by step in constant memory."""

    def __init__(self, window: int = STATS_WINDOW) -> None:
        self._window = window
        self.steps = 0
        self.acted = 0  # steps whose action was sent (or would have been, in a dry run)
        self.holds = 0
        self.limited = 0  # steps where the safety filter changed the action
        self.queries = 0
        self.stale_actions = 0
        self.blended_actions = 0
        self.iterations: dict[int, int] = {}
        self.stopped_by: dict[str, int] = {}
        self.query_latency = RollingStats(window)
        self.query_stages: dict[str, RollingStats] = {}
        self.frame_age = RollingStats(window)
        self.queue = RollingStats(window)

    def on_step(self, record: StepRecord) -> None:
        self.steps += 1
        self.acted += record.decision.acted
        self.holds += record.decision is Decision.HOLD
        self.limited += bool(record.limits)
        self.queue.add(record.queue)
        for frame in record.frames:
            self.frame_age.add(frame.age_ms)
        if record.query is not None:
            self._add_query(record.query)

    def _add_query(self, query: QueryRecord) -> None:
        self.queries += 1
        self.stale_actions += query.stale
        self.blended_actions += query.blended
        k = min(query.iterations, MAX_TRACKED_ITERATIONS)
        self.iterations[k] = self.iterations.get(k, 0) + 1
        self.stopped_by[query.stopped_by] = self.stopped_by.get(query.stopped_by, 0) + 1
        self.query_latency.add(query.latency_ms)
        for stage, ms in query.timings_ms.items():
            stats = self.query_stages.get(stage)
            if stats is None:
                stats = self.query_stages[stage] = RollingStats(self._window)
            stats.add(ms)

    def iteration_summary(self) -> IterationSummary:
        if not self.iterations:
            return IterationSummary(0)
        ks = np.array(list(self.iterations), np.float64)
        counts = np.array(list(self.iterations.values()), np.float64)
        return IterationSummary(
            n=int(counts.sum()),
            mean=round(float((ks * counts).sum() / counts.sum()), 3),
            min=int(ks.min()),
            max=int(ks.max()),
            histogram={str(k): self.iterations[k] for k in sorted(self.iterations)},
            stopped_by=dict(sorted(self.stopped_by.items())),
        )

    def summary(self, timer: TimerSummary, faults: Mapping[str, int], *, duration_s: float, rate_hz: float,
                stop_reason: str, faulted: bool, execute: bool, robot_travel_m: Optional[float],
                success: Optional[bool] = None) -> RunSummary:
        """The end-of-run record: rate achieved, latencies, overruns, queue, iterations, faults."""
        return RunSummary(
            stop_reason=stop_reason,
            stopped_on_fault=faulted,
            steps=self.steps,
            duration_s=round(duration_s, 3),
            target_rate_hz=rate_hz,
            achieved_rate_hz=round(self.steps / duration_s, 3) if duration_s > 0 else None,
            execute=execute,
            acted=self.acted,
            holds=self.holds,
            limited=self.limited,
            overruns=timer.overruns,
            missed_slots=timer.missed_slots,
            max_overrun_ms=timer.max_overrun_ms,
            step_ms=timer.cycle_work_ms,
            sections_ms=timer.sections_ms,
            queries=self.queries,
            query_latency_ms=self.query_latency.summary(),
            query_stages_ms={stage: stats.summary() for stage, stats in self.query_stages.items()},
            iterations=self.iteration_summary(),
            stale_actions=self.stale_actions,
            blended_actions=self.blended_actions,
            queue=self.queue.summary(digits=2),
            frame_age_ms=self.frame_age.summary(),
            faults=dict(sorted(faults.items())),
            robot_travel_m=None if robot_travel_m is None else round(robot_travel_m, 4),
            success=success,
        )
