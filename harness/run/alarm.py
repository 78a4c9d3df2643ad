"""Bounds on a case's time: ``--timeout-s`` per attempt, as a SIGALRM alarm in process, and the
longest a case may take in all (an isolated worker is killed past it)."""

from __future__ import annotations

import signal
import threading

from harness.run.quiet import QUIET_WAIT_S

WORKER_GRACE_S = 2.0  # an isolated worker's own alarm fires first, so it can answer with a timeout row


class CaseTimeout(Exception):
    pass


def case_limit_s(execution) -> float:
    """The longest one case may take, all its attempts together: ``--timeout-s`` bounds each attempt,
    and each re-measurement may first wait ``QUIET_WAIT_S`` for quiet (an isolated worker is killed
    past this, ``WORKER_GRACE_S`` after its own alarms could have fired; in process each attempt has
    its own alarm)."""
    return execution.timeout_s * (execution.retries + 1) + QUIET_WAIT_S * execution.retries + WORKER_GRACE_S


class Alarm:
    """SIGALRM-based bound on one in-process case (main thread only; C kernels finish their call first)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")

    def _fire(self, signum, frame):
        raise CaseTimeout(f"case exceeded --timeout-s {self.seconds:g} s")

    def __enter__(self):
        if self.active:
            self._old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)
        return False
