"""What the control loop tells the parts that watch it: the step log, the run's statistics, a
status line. Each subscribes to the records it needs; the loop knows none of them by name."""

from __future__ import annotations

from rdvla.runtime.control.records import RunSummary, StartRecord, StepRecord


class Subscriber:
    """Called on the loop's thread, in order: `on_start` once, `on_step` every cycle, `on_end` once.
    Keep `on_step` short: it runs inside the control period."""

    def on_start(self, record: StartRecord) -> None:
        """The run has started; its queue is primed."""

    def on_step(self, record: StepRecord) -> None:
        """One control cycle has finished."""

    def on_end(self, summary: RunSummary) -> None:
        """The run is over (also after a fault or an interrupt)."""
