"""Executors: measure one case and return its row fields, whatever happens (a failure is a row).

``InProcess`` measures in this process (variants and their compiled functions reused across cases,
``--timeout-s`` enforced by SIGALRM); ``Isolated`` sends each case to a fresh worker process
(``harness.run.protocol``), which a crash or an overrun kills without harming the sweep.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import signal
import threading
import time

import torch

from harness.analysis.trust import MIN_CALLS, SLOW_CALIBRATION, row_flags, worth_remeasuring
from harness.bench.heap import free_heap_bytes, pin_allocator
from harness.bench.machine import BANDWIDTH_KEY
from harness.bench.measure import CALIBRATION_BUDGET_S, ReferenceCache, measure
from harness.bench.timing import calibrate
from harness.core.case import Case
from harness.core.registry import get_variant
from harness.run.config import SweepConfig
from harness.run.protocol import WorkerDied, WorkerProcess
from harness.store.git import HARNESS_ROOT
from harness.store.provenance import cpu_model

QUIET_WAIT_S = 5.0  # longest wait for the machine to calm down before re-measuring a flagged cell
QUIET_POLL_S = 0.5
RECHECK_WAIT_FRACTION = 0.15  # by default the end-of-run re-check may wait this fraction of the cases' time ...
RECHECK_WAIT_MAX_S = 300.0  # ... at most this long (and at least QUIET_WAIT_S)
WORKER_GRACE_S = 2.0  # an isolated worker's own alarm fires first, so it can answer with a timeout row


def wait_for_quiet(device: str, best: float | None, limit_s: float = QUIET_WAIT_S) -> bool:
    """Wait, at most ``limit_s``, for the calibration kernel (on torch's current threads) to run within
    ``SLOW_CALIBRATION`` of ``best``, the best time seen; True when it did (False without a best)."""
    if not best:
        return False
    deadline = time.perf_counter() + limit_s
    while True:  # at least one probe
        try:
            now = calibrate(device, CALIBRATION_BUDGET_S, min_samples=5)["time_s_median"]
        except Exception:  # e.g. a CUDA context an earlier case broke: no evidence of quiet, and no crash
            return False
        if now <= SLOW_CALIBRATION * best:
            return True
        if time.perf_counter() + QUIET_POLL_S >= deadline:
            return False
        time.sleep(QUIET_POLL_S)


class QuietWaiter:
    """``wait_for_quiet`` for a run of re-measurements. After a wait that ran out (the machine stayed
    slow for ``QUIET_WAIT_S``: a sustained slowdown, not a burst) the next waits only probe once, until a
    probe finds the machine quiet again: on a machine that stays slow, each re-measurement costs one
    calibration, not ``QUIET_WAIT_S`` (its rows are flagged all the same). With ``--isolate`` each case's
    worker starts with a fresh one, so there only the sweep's end-of-run waits share it.

    ``budget_s`` (the end-of-run re-check's ``--recheck-wait-s``; 0: none) is how long these waits may
    take in all before they only probe. While some is left, a wait that runs out goes on until the
    machine comes back or the budget is spent: on a VM whose speed changes for a minute or two at a
    time, the re-check then measures its cells once the machine is back, instead of giving up after
    ``QUIET_WAIT_S``. ``waited_s``: the time spent waiting, every wait counted. ``log`` (a callable,
    or None) is told when a wait goes on past ``QUIET_WAIT_S`` and how it ended."""

    def __init__(self, budget_s: float = 0.0, log=None) -> None:
        self.missed = False
        self.budget_s = budget_s
        self.waited_s = 0.0
        self.log = log

    def __call__(self, device: str, best: float | None) -> bool:
        t0 = time.perf_counter()
        quiet = wait_for_quiet(device, best, QUIET_POLL_S if self.missed else QUIET_WAIT_S)
        left = self.budget_s - self.waited_s - (time.perf_counter() - t0)
        if best and not quiet and left > QUIET_POLL_S:  # a slowdown that outlasts a burst: wait it out, bounded
            if self.log:
                self.log(f"the machine is slow (calibration above {SLOW_CALIBRATION:.2f}x the run's best, "
                         f"{best * 1e3:.3g} ms): waiting up to {left:.0f} s more for it to come back "
                         f"(--recheck-wait-s {self.budget_s:.0f})")
            t1 = time.perf_counter()
            quiet = wait_for_quiet(device, best, left)
            if self.log:
                self.log(f"the machine came back after {time.perf_counter() - t1:.0f} s" if quiet else
                         f"the machine stayed slow for {time.perf_counter() - t1:.0f} s: the re-check's wait is spent")
        self.waited_s += time.perf_counter() - t0
        if best:
            self.missed = not quiet
        return quiet


def recheck_wait_budget_s(config: SweepConfig, took_s: float) -> float:
    """How long the end-of-run re-check may wait for quiet in all: ``--recheck-wait-s``, or by default
    ``RECHECK_WAIT_FRACTION`` of ``took_s`` (the time the run's cases took), at least ``QUIET_WAIT_S`` and
    at most ``RECHECK_WAIT_MAX_S``: a run waits in proportion to how long it measured."""
    if config.recheck_wait_s is not None:
        return config.recheck_wait_s
    return min(RECHECK_WAIT_MAX_S, max(QUIET_WAIT_S, RECHECK_WAIT_FRACTION * took_s))


def case_limit_s(config: SweepConfig) -> float:
    """The longest one case may take, all its attempts together: ``--timeout-s`` bounds each attempt,
    and each re-measurement may first wait ``QUIET_WAIT_S`` for quiet (an isolated worker is killed
    past this, ``WORKER_GRACE_S`` after its own alarms could have fired; in process each attempt has
    its own alarm)."""
    return config.timeout_s * (config.retries + 1) + QUIET_WAIT_S * config.retries + WORKER_GRACE_S


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to the case's ``threads`` while it is measured (None: unchanged)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    """Bytes that can be allocated now: on CPU, host memory available (psutil) plus what glibc's heap holds
    free (a steady allocator keeps freed memory: harness.bench.heap); on CUDA, free device memory plus
    what torch's caching allocator holds unused."""
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    import psutil  # lazy: only sweeps need it

    return psutil.virtual_memory().available + free_heap_bytes()


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
    """Measures cases in this process, reusing variant instances (and their compiled functions).

    A cell whose own evidence flags it (``harness.analysis.trust.row_flags``: noisy, few calls, host
    busy, slow calibration, above the ceiling; not page faults alone, which measuring again cannot
    clear) is measured again, up to ``retries`` times, each time
    after waiting (at most ``QUIET_WAIT_S``; ``QuietWaiter``) for the calibration kernel to come back
    near the best seen; the row keeps the attempt with the fewest flags (then the lowest IQR/median) and counts them.
    """

    def __init__(self, config: SweepConfig, ceilings: dict[str, float]) -> None:
        self.config, self.ceilings = config, ceilings
        pin_allocator(config.allocator)  # also in workers and Ray tasks, before any case (run.json: the driver's)
        self.variants: dict = {}
        self.ref_cache = ReferenceCache()
        self.best_calibration: dict[int, float] = {}  # by torch threads: the kernel runs on all of them
        self.waiter = QuietWaiter()

    def _measure_until_trusted(self, variant, case: Case) -> dict:
        """Each attempt is bounded by ``--timeout-s`` on its own (waits for quiet are not counted): the
        first overrun is the case's timeout; a re-measurement that overruns keeps the earlier attempts."""
        attempts = []
        for attempt in range(self.config.retries + 1):
            if attempt:
                self._wait_for_quiet(case.device)
            try:
                with _Alarm(self.config.timeout_s):
                    rec = measure(variant, case, self.config.budget_s, self.ceilings.get(case.dtype),
                                  max_error_elements=self.config.max_error_elements, ref_cache=self.ref_cache,
                                  bandwidth=self.ceilings.get(BANDWIDTH_KEY), min_samples=MIN_CALLS)
            except CaseTimeout:
                if not attempts:
                    raise
                break
            cal, threads = rec.get("calibration_s"), torch.get_num_threads()
            if cal:
                self.best_calibration[threads] = min(self.best_calibration.get(threads, cal), cal)
            flags = row_flags(rec, self.best_calibration.get(threads)) or []
            spread = rec["time_s_iqr"] / rec["time_s_median"] if rec["time_s_median"] else float("inf")
            attempts.append((len(flags), spread, rec))
            if not worth_remeasuring(flags):
                break
        best = min(attempts, key=lambda a: (a[0], a[1]))[2]
        return {**best, "attempts": len(attempts)}

    def _wait_for_quiet(self, device: str) -> None:
        self.waiter(device, self.best_calibration.get(torch.get_num_threads()))

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
            with torch_threads(case.threads):
                return self._measure_until_trusted(variant, case)
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
            return {**node_fields(case.device), **worker.ask({"case": case.to_record()}, case_limit_s(self.config))}
        except WorkerDied as died:
            return {"status": died.status, "reason": died.reason, **node_fields(case.device)}
        finally:
            if worker is not None:
                worker.close()
