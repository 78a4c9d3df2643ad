"""Executors: measure one case and return its row fields, whatever happens (a failure is a row).

``InProcess`` measures in this process (variants and their compiled functions reused across cases,
``--timeout-s`` enforced by SIGALRM); ``Isolated`` sends each case to a fresh worker process
(``harness.run.protocol``), which a crash or an overrun kills without harming the sweep.
"""

from __future__ import annotations

import functools
import platform
import signal
import threading

import torch

from harness.bench.machine import BANDWIDTH_KEY
from harness.bench.measure import ReferenceCache, measure
from harness.core.case import Case
from harness.core.registry import get_variant
from harness.run.config import SweepConfig
from harness.run.protocol import WorkerDied, WorkerProcess
from harness.store.git import HARNESS_ROOT
from harness.store.provenance import cpu_model


class CaseTimeout(Exception):
    pass


@functools.cache
def node_fields(device: str) -> dict:
    """The ``node`` (hostname) and ``device_name`` columns of a row measured in this process (the Ray
    executor adds ``node_id``); for CUDA, the name of the GPU this process sees first."""
    name = torch.cuda.get_device_name() if device == "cuda" and torch.cuda.is_available() else cpu_model()
    return {"node": platform.node(), "device_name": name}


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


def footprint_bytes(case: Case) -> int:
    """A lower bound, closed form, on the bytes a case holds on its device: q, k, v and the output, plus
    for fwd_bwd the upstream gradient and dq, dk, dv. Whatever the variant needs comes on top."""
    tensors = 8 if case.pass_ == "fwd_bwd" else 4
    return tensors * case.batch * case.heads * case.seq_len * case.head_dim * case.torch_dtype.itemsize


def available_bytes(device: str) -> int:
    """Bytes that can be allocated now: host memory available (psutil) on CPU; on CUDA, free device memory
    plus what torch's caching allocator holds unused."""
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    import psutil  # lazy: only sweeps need it

    return psutil.virtual_memory().available


def memory_shortfall(case: Case) -> str | None:
    """The reason a case cannot fit in its device's memory, with the figures, or None if it may fit."""
    need = footprint_bytes(case)
    have = available_bytes(case.device)
    if need <= have:
        return None
    gib = 2**30
    what = "q, k, v, the output and their gradients" if case.pass_ == "fwd_bwd" else "q, k, v and the output"
    return (f"not attempted: {what} alone need {need} bytes ({need / gib:.1f} GiB), more than the {have} bytes "
            f"({have / gib:.1f} GiB) available on {case.device}")


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
        return {**self._metrics(case), **node_fields(case.device)}

    def _metrics(self, case: Case) -> dict:
        try:
            variant = self.variant(case)
            reasons = variant.not_supported_reasons(case)
            if reasons:
                return {"status": "unsupported", "reason": "; ".join(reasons)}
            too_big = memory_shortfall(case)
            if too_big:  # known before allocating anything: say so at once
                return {"status": "oom", "reason": too_big}
            with _Alarm(self.config.timeout_s):
                return measure(variant, case, self.config.budget_s, self.ceilings.get(case.dtype),
                               max_error_elements=self.config.max_error_elements, ref_cache=self.ref_cache,
                               bandwidth=self.ceilings.get(BANDWIDTH_KEY))
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
            return {**node_fields(case.device), **worker.ask({"case": case.to_record()}, self.config.timeout_s)}
        except WorkerDied as died:
            return {"status": died.status, "reason": died.reason, **node_fields(case.device)}
        finally:
            if worker is not None:
                worker.close()
