"""Executors: measure one case and return its row fields, whatever happens (a failure is a row).

``InProcess`` measures in this process (variants and their compiled functions reused across cases,
``--timeout-s`` enforced by SIGALRM); ``Isolated`` sends each case to a fresh worker process
(``harness.run.protocol``), which a crash or an overrun kills without harming the sweep.
"""

from __future__ import annotations

import signal
import threading

import torch

from harness.bench.measure import ReferenceCache, measure
from harness.core.case import Case
from harness.core.registry import get_variant
from harness.run.config import SweepConfig
from harness.run.protocol import WorkerDied, WorkerProcess
from harness.store.git import HARNESS_ROOT


class CaseTimeout(Exception):
    pass


def classify(exc: BaseException) -> tuple[str, str]:
    """(status, reason) for an exception raised while measuring a case."""
    reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".strip()
    if isinstance(exc, CaseTimeout):
        return "timeout", str(exc)
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return "oom", reason
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower()):
        return "oom", reason
    return "error", reason


class _Alarm:
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


class InProcess:
    """Measures cases in this process, reusing variant instances (and their compiled functions)."""

    def __init__(self, config: SweepConfig, ceilings: dict[str, float]) -> None:
        self.config, self.ceilings = config, ceilings
        self.variants: dict = {}
        self.ref_cache = ReferenceCache()

    def variant(self, case: Case):
        key = (case.variant, case.params)
        if key not in self.variants:
            self.variants[key] = get_variant(case.variant, **dict(case.params))
        return self.variants[key]

    def metrics(self, case: Case) -> dict:
        try:
            variant = self.variant(case)
            reasons = variant.not_supported_reasons(case)
            if reasons:
                return {"status": "unsupported", "reason": "; ".join(reasons)}
            with _Alarm(self.config.timeout_s):
                return measure(variant, case, self.config.budget_s, self.ceilings.get(case.dtype),
                               max_error_elements=self.config.max_error_elements, ref_cache=self.ref_cache)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # every failure becomes a row; the sweep goes on
            status, reason = classify(exc)
            return {"status": status, "reason": reason}
        finally:
            if case.device == "cuda" and torch.cuda.is_available():
                torch.cuda.empty_cache()


class Isolated:
    """Measures each case in a fresh worker process (harness.run.protocol), killed at the timeout."""

    def __init__(self, config: SweepConfig, ceilings: dict[str, float]) -> None:
        self.config, self.ceilings = config, ceilings

    def metrics(self, case: Case) -> dict:
        job = {"mode": "sweep", "config": self.config.to_dict(), "ceilings": self.ceilings}
        worker = None
        try:
            worker = WorkerProcess(HARNESS_ROOT, job)
            return worker.ask({"case": case.to_record()}, self.config.timeout_s)
        except WorkerDied as died:
            return {"status": died.status, "reason": died.reason}
        finally:
            if worker is not None:
                worker.close()
