"""Ctrl+C and SIGTERM, raised at once and remembered.

The handler raises KeyboardInterrupt, so long work stops where it is and cleans up. A C extension
can swallow that exception: when the signal lands while torch's C++ code calls back into Python
(tracing an ONNX export, inferring a tensor's shape), the callback's error is cleared and the work
goes on, or comes back as an unrelated error. So the signal is also remembered: nothing is
published after one (`raise_if_received`), and the CLI reports "interrupted" whatever the work did.
"""

from __future__ import annotations

import contextlib
import signal
from types import FrameType
from typing import Iterator, Optional

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: Optional[int] = None


def _handle(signum: int, _frame: Optional[FrameType]) -> None:
    global _received
    _received = signum
    raise KeyboardInterrupt


@contextlib.contextmanager
def remembered() -> Iterator[None]:
    """Handle Ctrl+C and SIGTERM this way for the body; a signal the parent ignores (nohup) stays ignored."""
    global _received
    _received = None
    previous = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # None: a handler installed outside Python, which cannot be put back; the default is the nearest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def received() -> bool:
    """Whether Ctrl+C or SIGTERM arrived inside `remembered()`, even if the KeyboardInterrupt was swallowed."""
    return _received is not None


def raise_if_received() -> None:
    """Raise the KeyboardInterrupt again if a library swallowed it; call before making work final."""
    if _received is not None:
        raise KeyboardInterrupt
