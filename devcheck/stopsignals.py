"""SIGTERM and SIGHUP raised as an exception, as Python already does for SIGINT.

Their default action ends the process at once, so no ``finally`` or ``with`` block runs:
a CI job cancelled with SIGTERM, or a closed terminal's SIGHUP, would leave the pitfall
lab's phase group or torchrun's ranks running. Raised instead, the caller's cleanup
unwinds as on Ctrl-C, and :attr:`Stopped.signum` keeps which signal it was, for the exit
code (128 + signum).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived; handled like Ctrl-C, but it names its signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP (where they exist: Windows has SIGTERM only)
    raise :class:`Stopped`; the previous handlers come back after it. Off the main thread
    (where handlers cannot be set) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    caught = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {s: signal.signal(s, stop) for s in caught}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
