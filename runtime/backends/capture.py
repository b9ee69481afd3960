"""Capture with fallback, shared by the backends that replay CUDA graphs (TensorRT, PyTorch).

A backend hands over one runner per ping-pong direction of a core graph (a call that runs the
graph once on the backend's stream) and a way to capture a runner into a replayable graph. Here,
once for every backend: warm-up runs of every direction (the first runs load kernels lazily and set
up workspaces, which must not end up inside a graph), a synchronisation, then one capture per
direction. Any failure leaves the graph running directly, with the reason logged and kept for
`execution_modes()`: a backend without graphs is slower, never wrong.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from rdvla.runtime.backends.pingpong import Direction

log = logging.getLogger(__name__)

Runner = Callable[[], None]
DISABLED = "CUDA graphs disabled"


@dataclass(frozen=True)
class Execution:
    """How one graph runs: a runner per direction, and the mode `execution_modes()` reports."""

    runners: dict[Direction, Runner]
    mode: str


def capture_or_fallback(
    graph: str,
    runners: Mapping[Direction, Runner],
    capture: Callable[[Runner], Runner],
    synchronize: Callable[[], None],
    *,
    warmup_runs: int,
    direct: str,
    skip_reason: Optional[str] = None,
) -> Execution:
    """Graph replays of every direction of `graph`, or its direct `runners` and why.

    `capture(run)` records one run into a graph and returns what replays it; it must leave the
    stream usable when it fails. `skip_reason` says why not to try at all (disabled, CPU, dynamic
    shapes); `direct` names the direct way of running ("eager", "execute_async_v3").
    """
    reason = skip_reason
    if reason is None:
        try:
            for run in runners.values():
                for _ in range(warmup_runs):
                    run()
            synchronize()
            replays = {direction: capture(run) for direction, run in runners.items()}
        except Exception as exc:  # whatever broke the capture, the graph still runs directly
            synchronize()
            reason = f"capture failed ({type(exc).__name__}: {exc})"
        else:
            return Execution(replays, f"CUDA graphs ({len(replays)} directions)")
    # A capture failure is worth a warning; a graph not captured by choice or by platform is not.
    (log.warning if skip_reason is None else log.info)("%s runs without CUDA graphs (%s): %s", graph, direct, reason)
    return Execution(dict(runners), f"{direct}: {reason}")
