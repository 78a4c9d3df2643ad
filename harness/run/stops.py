"""A stop asked for from outside (SIGTERM from ``timeout``, ``docker stop`` or Slurm; SIGHUP when a
terminal closes) ends a sweep as Ctrl-C does: ``Stopped`` is a ``KeyboardInterrupt``, so the rows
finished are saved, the case in progress is not blamed, and the exit status is 128 + the signal."""

from __future__ import annotations

import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum, frame):
    raise Stopped(signum)


@contextlib.contextmanager
def stops_as_interrupts():
    """While inside, SIGTERM and SIGHUP raise ``Stopped`` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, _raise) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
