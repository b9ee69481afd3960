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
import threading
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
    """Handle Ctrl+C and SIGTERM this way for the body (read `received()` inside it); a signal the parent
    ignores (nohup) stays ignored."""
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
        _received = None  # what follows in this process (another command, a library call) starts afresh


def received() -> bool:
    """Whether Ctrl+C or SIGTERM arrived inside `remembered()`, even if the KeyboardInterrupt was swallowed."""
    return _received is not None


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Ctrl+C and SIGTERM held back for a step that must not stop half-way (two renames that belong together),
    then handed to the handler they would have met. Off the main thread this is the body alone: Python runs
    signal handlers on the main thread, so they never interrupt another."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    # Only the handlers that raise are held: ours, and Python's own Ctrl+C handler outside `remembered()`.
    raising = {signum: handler for signum in _SIGNALS
               if (handler := signal.getsignal(signum)) is _handle or handler is signal.default_int_handler}
    for signum in raising:
        signal.signal(signum, lambda signum, _frame: arrived.append(signum))
    try:
        yield
    finally:
        for signum, handler in raising.items():
            signal.signal(signum, handler)
    if arrived:
        raising[arrived[0]](arrived[0], None)


def raise_if_received() -> None:
    """Raise the KeyboardInterrupt again if a library swallowed it; call before making work final."""
    if _received is not None:
        raise KeyboardInterrupt
