"""What `rdvla run` shows: the live status line (a loop subscriber) and the summary at the end."""

from __future__ import annotations

from typing import IO, Optional

from rdvla.runtime.control.pacing import Stats
from rdvla.runtime.control.records import RunSummary, StepRecord
from rdvla.runtime.control.subscriber import Subscriber


class StatusLine(Subscriber):
    """One self-overwriting line on a terminal: step, rate, queue, last query, faults."""

    def __init__(self, stream: IO[str], total: Optional[int], execute: bool) -> None:
        self.stream = stream
        self.total = total
        self.mode = "EXECUTING" if execute else "DRY RUN"
        self.last_query = "-"
        self.faults = 0
        self.width = 0

    def on_step(self, record: StepRecord) -> None:
        if record.query is not None:
            self.last_query = f"{record.query.latency_ms:.0f} ms, k={record.query.iterations}"
        self.faults += len(record.faults)
        parts = [f"{self.mode} step {record.step + 1}{f'/{self.total}' if self.total else ''}",
                 f"slot {record.slot}", f"queue {record.queue}{'+' if record.inflight else ''}", f"query {self.last_query}"]
        if record.frames:
            parts.append(f"frame age {max(f.age_ms for f in record.frames):.0f} ms")
        parts.append(record.decision.value)
        parts.append(f"faults {self.faults}" + (f" ({record.faults[0].kind.value})" if record.faults else ""))
        text = "  ".join(parts)
        self.width = max(self.width, len(text))
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()

    def on_end(self, summary: RunSummary) -> None:
        if self.width:
            self.stream.write("\n")
            self.stream.flush()


def _ms(stats: Stats) -> str:
    return f"p50 {stats.p50:.1f} / p95 {stats.p95:.1f} / max {stats.max:.1f} ms" if stats.n else "-"


def format_summary(s: RunSummary) -> list[str]:
    """The summary record as a few lines of text."""
    iterations = s.iterations
    lines = [
        f"stopped: {s.stop_reason}{' (fault: the robot was halted)' if s.stopped_on_fault else ''}"
        + ("" if s.success is None else f"; task {'succeeded' if s.success else 'not achieved'}"),
        f"steps {s.steps} in {s.duration_s:.1f} s: {s.achieved_rate_hz or 0:.2f} Hz (target {s.target_rate_hz:g}); "
        f"{'executed' if s.execute else 'dry run'} {s.acted}, held {s.holds}, limited by safety {s.limited}",
        f"overruns {s.overruns} (missed slots {s.missed_slots}, worst {s.max_overrun_ms:.1f} ms)",
        f"step work     {_ms(s.step_ms)}",
    ]
    for name, stats in s.sections_ms.items():
        lines.append(f"  {name:<11} {_ms(stats)}")
    lines.append(f"queries {s.queries}: latency {_ms(s.query_latency_ms)}")
    for stage in ("preprocess", "vlm_prelude", "iterations", "total"):
        if stage in s.query_stages_ms:
            lines.append(f"  {stage:<11} {_ms(s.query_stages_ms[stage])}")
    if iterations.n:
        lines.append(f"iterations per query: mean {iterations.mean:.2f} (min {iterations.min}, max {iterations.max}); "
                     f"histogram {iterations.histogram}; stopped by {iterations.stopped_by}")
    lines.append(f"queue depth mean {s.queue.mean or 0:.2f}; stale actions dropped {s.stale_actions}, "
                 f"blended {s.blended_actions}; frame age {_ms(s.frame_age_ms)}")
    lines.append("faults: " + (", ".join(f"{k} {v}" for k, v in s.faults.items()) or "none"))
    latency = s.query_latency_ms
    if s.faults.get("starved") and latency.n and latency.p50 is not None:
        periods = latency.p50 * s.target_rate_hz / 1e3
        lines.append(f"  the queue ran dry: a query takes {latency.p50:.0f} ms ({periods:.1f} periods) and a chunk then "
                     "has only what is left of its horizon; lower --rate, raise --horizon, or use a faster backend")
    if s.overruns:
        lines.append("  cycles ran past their period: in sync mode a query must fit in one (--mode async, or a lower --rate)")
    if s.robot_travel_m is not None:
        lines.append(f"end-effector travel {s.robot_travel_m * 100:.1f} cm")
    return lines
