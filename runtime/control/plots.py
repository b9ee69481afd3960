"""A picture of a run from its step log: cycle time against the period, query latency and
iterations, queue depth. The queue panel is the one to read when asynchronous inference misbehaves:
a queue that keeps reaching zero means inference is slower than the chunks it delivers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from rdvla.runtime.control.records import Decision, LogRecord, StartRecord, StepRecord

log = logging.getLogger(__name__)


def plot_run(records: Sequence[LogRecord], path: Path) -> Optional[Path]:
    """Write the PNG; None (and a log line) when matplotlib is missing or the log holds no step."""
    steps = [r for r in records if isinstance(r, StepRecord)]
    start = next((r for r in records if isinstance(r, StartRecord)), None)
    if not steps:
        log.warning("no steps in the log: no plot")
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plot of the run")
        return None
    period_ms = 1e3 / start.settings["rate_hz"] if start else None
    index = [r.step for r in steps]
    fig, (ax_time, ax_query, ax_queue) = plt.subplots(3, 1, figsize=(9, 7), sharex=True)

    work = [sum(r.sections_ms.values()) for r in steps]
    ax_time.plot(index, work, lw=0.8, label="cycle work (observe+infer+act+send)")
    if period_ms:
        ax_time.axhline(period_ms, color="gray", ls="--", lw=0.8, label=f"period {period_ms:.0f} ms")
    holds = [r.step for r in steps if r.decision in (Decision.HOLD, Decision.STOP)]
    if holds:
        ax_time.plot(holds, [0] * len(holds), "r|", ms=10, label="hold / stop")
    ax_time.set(ylabel="ms", title="control loop")
    ax_time.legend(fontsize=7, loc="upper right")

    arrivals = [(r.step, r.query) for r in steps if r.query is not None]
    ax_query.plot([step for step, _ in arrivals], [q.latency_ms for _, q in arrivals], "o-", ms=3, lw=0.8,
                  color="tab:orange", label="query latency (submission to arrival)")
    ax_query.set(ylabel="ms")
    ax_iter = ax_query.twinx()
    ax_iter.step([step for step, _ in arrivals], [q.iterations for _, q in arrivals], where="post",
                 color="tab:green", lw=0.8, label="iterations")
    ax_iter.set(ylabel="iterations")
    ax_query.legend(fontsize=7, loc="upper left")
    ax_iter.legend(fontsize=7, loc="upper right")

    ax_queue.step(index, [r.queue for r in steps], where="post", lw=0.8, label="actions queued after this step")
    started = [r for r in steps if r.submitted is not None]
    ax_queue.plot([r.step for r in started], [r.queue for r in started], "k.", ms=4, label="query started")
    ax_queue.set(xlabel="step", ylabel="actions")
    ax_queue.legend(fontsize=7, loc="upper right")

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
