"""TensorRT's log messages into Python logging, for the builder (which also keeps them for build.log) and the backend."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import tensorrt as trt


def make_trt_logger(target: logging.Logger, sink: Optional[list[str]] = None) -> "trt.ILogger":
    """A TensorRT logger that forwards to `target` (TensorRT's INFO as DEBUG) and, if given, appends to `sink`.

    VERBOSE messages are dropped unless `target` logs DEBUG: TensorRT emits thousands during a build.
    """
    import tensorrt as trt

    levels = {
        trt.ILogger.INTERNAL_ERROR: ("INTERNAL_ERROR", logging.CRITICAL),
        trt.ILogger.ERROR: ("ERROR", logging.ERROR),
        trt.ILogger.WARNING: ("WARNING", logging.WARNING),
        trt.ILogger.INFO: ("INFO", logging.DEBUG),
        trt.ILogger.VERBOSE: ("VERBOSE", logging.DEBUG),
    }

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            label, level = levels.get(severity, ("INFO", logging.DEBUG))
            if label == "VERBOSE" and not target.isEnabledFor(logging.DEBUG):
                return
            if sink is not None:
                sink.append(f"[TensorRT {label}] {msg}")
            target.log(level, "TensorRT: %s", msg)

    return _Logger()
