"""The one timing loop, and the one calibration kernel per device.

This module imports nothing from attnbench (only the standard library and torch): the CI gate's
worker loads this very file by path, so that both trees it compares are timed by the same code.

``time_callable`` warms up, sizes a block of calls, then times blocks with ``timeit`` for ``budget_s``.
Raw per-call samples are kept; statistics are derived on read, of the samples used. Beside every block:
its threads' wait for a CPU (Linux schedstat; above ``CONTENDED`` of its time the sample is
contended), the process's minor page faults (a call that faults maps fresh memory:
``harness.bench.heap``), other processes' CPU use (``host``), and a ``beside`` kernel (the calibration
matmul) timed right after it: the machine's speed in the same moments (on a 2-core VM it tracked a
cell's 0.2 s windows with a correlation of 0.73-0.94). Above ``slow_above`` the sample was timed while
the machine was slow (a VM's neighbours slow it in bursts of 0.1-1 s). Contended and slow samples are
kept raw but left out of the statistics while enough others exist, and more blocks are timed, within a
bound, until they do (as nvbench drops samples a throttled GPU took).
"""

from __future__ import annotations

import os
import statistics
import time
import timeit
from dataclasses import dataclass
from typing import Callable

import torch

NOISE_THRESHOLD = 0.1  # IQR / median above this flags a measurement as noisy
CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "cpu": time.process_time,  # CPU time of this process: blind to time spent preempted by others
}
CONTENDED = 0.05  # a block whose threads waited for a CPU more than this share of its wall time is contended
CONTENTION_EXTRA = 2.0  # under contention, up to this many times the normal timing again for clean blocks
SLOW_EXTRA = 1.0  # on a slow machine, up to this many times the normal timing again for fast blocks
MIN_FAST = 3  # the statistics are of the fast samples when at least this many exist (else of the clean ones)


def _contended(sample: float, wait: float | None) -> bool:
    """A sample whose threads waited for a CPU more than ``CONTENDED`` of it (no reading: not contended)."""
    return wait is not None and wait > CONTENDED * sample


def used_mask(contended: list[bool], slow: list[bool]) -> list[bool]:
    """Per sample, whether the statistics are of it: the clean (not contended) and fast (not slow)
    samples when at least ``MIN_FAST`` exist, else the clean ones, else all of them."""
    fast = [not c and not s for c, s in zip(contended, slow)]
    if sum(fast) >= MIN_FAST:
        return fast
    clean = [not c for c in contended]
    return clean if any(clean) else [True] * len(contended)


def runqueue_wait_s() -> float | None:
    """Seconds this process's threads have waited on a run queue for a CPU (runnable, not running), all
    threads summed; None where the kernel does not say (not Linux, no schedstat)."""
    total, found = 0, False
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat") as f:
                total += int(f.read().split()[1])
                found = True
        except (OSError, IndexError, ValueError):  # a thread that ended between listing and reading
            continue
    return total / 1e9 if found else None


def minor_faults() -> int | None:
    """Minor page faults of this process so far, all threads (None where ``getrusage`` does not exist)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@dataclass
class Timing:
    """Raw per-call samples in seconds; statistics are derived on read, of the samples ``used_mask``
    picks (``samples_s`` keeps every raw one). Per sample, over its block: ``cpu_samples_s``, this
    process's CPU time per call (all threads); ``wait_samples_s``, its threads' run-queue wait per call
    (above ``CONTENDED`` of the sample: contended); ``fault_samples``, minor page faults per call;
    ``host_samples``, other processes' CPU use as a fraction of the cores; ``beside_samples_s``, a warm
    call of the ``beside`` kernel timed right after it (above ``slow_above``, None: never, it is slow).
    ``budget_s``: the seconds of timing the samples were given (``time_callable``'s, or its ``short`` one).
    """

    samples_s: list[float]
    number_per_sample: int = 1
    warmup_calls: int = 0
    cpu_samples_s: list[float] | None = None
    wait_samples_s: list[float] | None = None
    fault_samples: list[float] | None = None
    beside_samples_s: list[float] | None = None
    slow_above: float | None = None
    host_samples: list[float] | None = None
    budget_s: float | None = None

    @property
    def contended(self) -> list[bool]:
        """Per sample: whether its threads waited for a CPU more than ``CONTENDED`` of its time."""
        if self.wait_samples_s is None:
            return [False] * len(self.samples_s)
        return [_contended(s, w) for s, w in zip(self.samples_s, self.wait_samples_s)]

    @property
    def slow(self) -> list[bool]:
        """Per sample: whether the ``beside`` kernel timed right after it took longer than ``slow_above``."""
        if self.slow_above is None or self.beside_samples_s is None:
            return [False] * len(self.samples_s)
        return [b > self.slow_above for b in self.beside_samples_s]

    def _picked(self, values: list) -> list:
        """Of a per-sample list, the values beside the samples the statistics are of (``used_mask``)."""
        return [v for v, u in zip(values, used_mask(self.contended, self.slow)) if u]

    @property
    def used(self) -> list[float]:
        """The samples the statistics are of (``used_mask``)."""
        return self._picked(self.samples_s)

    @property
    def median(self) -> float:
        return statistics.median(self.used)

    @property
    def beside_median(self) -> float | None:
        """The median of the ``beside`` kernel's times next to the samples the statistics are of; None
        when nothing was timed beside."""
        return statistics.median(self._picked(self.beside_samples_s)) if self.beside_samples_s else None

    @property
    def host_busy(self) -> float | None:
        """Other processes' CPU use over the blocks of the samples used, as a fraction of the cores
        (weighted by the blocks' times: one block's reading is coarse, the kernel counts in ticks)."""
        if not self.host_samples:
            return None
        used = self._picked(list(zip(self.samples_s, self.host_samples)))
        return max(0.0, sum(s * h for s, h in used) / sum(s for s, _ in used))

    @property
    def iqr(self) -> float:
        used = self.used
        if len(used) < 2:
            return 0.0
        q = statistics.quantiles(used, n=4, method="inclusive")
        return q[2] - q[0]

    @property
    def noisy(self) -> bool:
        return self.iqr / self.median > NOISE_THRESHOLD if self.median > 0 else False

    def fields(self) -> dict:
        used, waits = self.used, self.wait_samples_s
        return {"time_s_median": self.median, "time_s_iqr": self.iqr, "time_s_min": min(used),
                "time_s_max": max(used), "time_n_samples": len(used),
                "time_number_per_sample": self.number_per_sample, "time_budget_s": self.budget_s,
                "time_noisy": self.noisy,
                "time_samples_s": list(self.samples_s),
                "time_cpu_samples_s": list(self.cpu_samples_s) if self.cpu_samples_s is not None else None,
                "time_wait_samples_s": list(waits) if waits is not None else None,
                "time_contended": self.contended if waits is not None else None,
                "time_fault_samples": list(self.fault_samples) if self.fault_samples is not None else None,
                "time_calibration_samples_s": (list(self.beside_samples_s) if self.beside_samples_s is not None
                                               else None),
                "time_slow": self.slow if self.slow_above is not None and self.beside_samples_s is not None else None,
                "time_used": used_mask(self.contended, self.slow),
                "time_host_busy_samples": list(self.host_samples) if self.host_samples is not None else None}


class _DualClock:
    """A timer for timeit that returns wall time and notes the process's CPU time and, when given, its
    threads' run-queue wait (``waits``), its minor page faults (``faults``) and other processes' CPU
    seconds per core (``host``) at every reading (on CUDA, ``wall`` synchronizes the device first).

    timeit reads its timer exactly twice per block (before and after the loop), so consecutive
    readings pair up per block. The others are read before the wall clock at a block's start and after
    it at its end, so that reading them (tens of microseconds) stays outside the timed block."""

    def __init__(self, wall: Callable[[], float], waits: Callable[[], float | None] | None = None,
                 faults: Callable[[], int | None] | None = None, host: Callable[[], float] | None = None) -> None:
        self.wall, self.readings = wall, []
        self.outside = {name: (read, []) for name, read in (("wait", waits), ("faults", faults), ("host", host))
                        if read is not None}

    def _read_outside(self) -> None:
        for read, readings in self.outside.values():
            readings.append(read())

    def __call__(self) -> float:
        start = len(self.readings) % 2 == 0
        if start:
            self._read_outside()
        cpu, now = time.process_time(), self.wall()
        self.readings.append(cpu)
        if not start:
            self._read_outside()
        return now

    @staticmethod
    def _per_call(readings: list, number: int) -> float | None:
        """The last block's difference (its two readings are the last two), per call."""
        start, end = readings[-2:]
        return None if start is None or end is None else (end - start) / number

    def last_block(self, number: int) -> tuple[float, float | None, float | None, float | None]:
        """Per-call CPU time, run-queue wait, minor page faults and other processes' CPU seconds per
        core (None: not read) of the last block of ``number`` calls."""
        extra = [self._per_call(self.outside[k][1], number) if k in self.outside else None
                 for k in ("wait", "faults", "host")]
        return self._per_call(self.readings, number), *extra


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


MIN_BLOCK_S = 1e-3  # shortest timed block: the clock's reading (~1 us) stays below 0.1% of it
MAX_NUMBER = 10**6  # calls per block at most (a call that takes no measurable time)
TARGET_SAMPLES = 10  # blocks are sized so that at least this many fit the budget: a median, not a mean of 2
_DEFAULT = object()


def time_callable(fn: Callable[[], object], device: str, budget_s: float = 0.5, warmup: int = 2,
                  timer: Callable[[], float] | None = None, min_samples: int = 1,
                  waits: Callable[[], float | None] | None = _DEFAULT,
                  beside: Callable[[], object] | None = None, first: Callable[[], object] | None = None,
                  slow_above: float | None = None, host: Callable[[], float] | None = None,
                  short: Callable[[float], float] | None = None) -> Timing:
    """Warm up (``warmup`` calls, or fewer: warming up stops after one sample's share of the budget,
    ``budget_s / min_samples``), size a block (``number`` calls, at least ``MIN_BLOCK_S`` of them) so
    that ``TARGET_SAMPLES`` blocks, or twice ``min_samples``, fit in ``budget_s``, then time blocks with
    ``timeit`` until ``budget_s`` is spent and ``min_samples`` samples exist. One sample is a block's
    time per call; of the sizing blocks only the last is kept. On CUDA the clock synchronizes the device
    at every reading, so a block covers its kernels, not their launches. ``timer`` (a clock in seconds;
    ``CLOCKS``) can be injected: the CI gate times CPU time, tests a fake clock.

    ``waits`` (the threads' run-queue wait; ``runqueue_wait_s`` by default with the wall clock) marks
    contended samples: while too few are clean, blocks go on, for at most ``CONTENTION_EXTRA`` times the
    normal timing's time, until ``min_samples`` and half the samples are clean. With the wall clock,
    minor page faults are read too, and ``host`` (other processes' CPU seconds per core), when given.

    ``beside`` (a zero-argument kernel) is called twice right after every kept block, outside it and
    the budget, the second call timed: the first refills the caches the block evicted (cold, the
    512x512 matmul read up to 1.3x its time). A sample whose ``beside`` call took longer than
    ``slow_above`` is slow: blocks go on, for at most ``SLOW_EXTRA`` times the normal timing's time,
    until ``min_samples`` (at least ``MIN_FAST``) clean and fast samples exist.

    ``first`` (a callable that calls ``fn`` once) makes the first warm-up call, even when ``warmup`` is
    0: the sweep measures a call's peak memory there. ``short`` (seconds a call takes -> seconds of
    budget): a call is timed for ``short`` of its first timed call, where that is less than ``budget_s``.
    """
    warmed, started = 0, time.perf_counter()
    share = budget_s / max(min_samples, 1)  # a call this long warms up alone: min_samples of it fill the budget
    calls = max(warmup, 1 if first is not None else 0)  # ``first`` is always called
    while warmed < calls and (warmed == 0 or time.perf_counter() - started < share):
        (first if warmed == 0 and first is not None else fn)()
        warmed += 1
    if beside is not None:
        beside()
    sync(device)
    base = timer or time.perf_counter
    if device == "cuda":
        def wall() -> float:
            torch.cuda.synchronize()
            return base()
    else:
        wall = base
    if waits is _DEFAULT:
        waits = runqueue_wait_s if timer is None else None
    if waits is not None and waits() is None:
        waits = None  # the kernel does not say: no evidence, rather than a column of Nones
    faults = minor_faults if timer is None and minor_faults() is not None else None
    clock = _DualClock(wall, waits, faults, host)
    block = timeit.Timer(stmt=fn, timer=clock)
    number, took = 1, block.timeit(1)
    if short is not None:  # one call says how long a call is: load only adds time
        budget_s = min(budget_s, short(took))
    target = max(budget_s / max(2 * min_samples, TARGET_SAMPLES), MIN_BLOCK_S)
    while took < target and number < MAX_NUMBER:
        grow = target / took if took > 0 else 10.0
        number = min(MAX_NUMBER, max(number + 1, int(number * min(grow * 1.2, 10.0))))
        took = block.timeit(number)
    samples, cpu, wait, fault, busy, spent = [], [], [], [], [], 0.0
    beside_s: list[float] | None = [] if beside is not None else None

    def keep(took: float) -> None:
        nonlocal spent
        c, w, f, h = clock.last_block(number)
        samples.append(took / number)
        cpu.append(c)
        wait.append(w)
        fault.append(f)
        busy.append(h / samples[-1] if h is not None and samples[-1] > 0 else 0.0)
        spent += took
        if beside is not None:  # after the block's last reading, so outside it
            beside()  # warms the caches the block evicted: a cold call reads the cell's footprint
            start = wall()
            beside()
            beside_s.append(wall() - start)

    keep(took)
    while spent < budget_s or len(samples) < min_samples:
        keep(block.timeit(number))
    slow_above = slow_above if beside is not None else None
    want, normal = max(min_samples, (len(samples) + 1) // 2), spent

    def more() -> bool:  # extra blocks: for clean samples under contention, for fast ones on a slow machine
        clean = [not _contended(s, w) for s, w in zip(samples, wait)]  # no wait read: clean
        if sum(clean) < want and spent < normal * (1 + CONTENTION_EXTRA):
            return True
        if slow_above is None:
            return False
        fast = sum(c and b <= slow_above for c, b in zip(clean, beside_s))
        return fast < max(min_samples, MIN_FAST) and spent < normal * (1 + SLOW_EXTRA)

    while more():
        keep(block.timeit(number))
    return Timing(samples_s=samples, number_per_sample=number, warmup_calls=warmed, cpu_samples_s=cpu,
                  wait_samples_s=wait if waits is not None else None, fault_samples=fault if faults is not None else None,
                  beside_samples_s=beside_s, slow_above=slow_above, host_samples=busy if host is not None else None,
                  budget_s=budget_s)


# ---- calibration: a fixed kernel whose time tracks the machine's speed ---------------------------
CALIBRATION_SIZES = {"cpu": 512, "cuda": 6144}  # CUDA: several ms, so launch overhead is negligible


def calibration_kernel(device: str) -> tuple[str, Callable[[], object]]:
    """(name, zero-argument callable): a float32 n x n matmul on ``device``, n per device above."""
    n = CALIBRATION_SIZES.get(device, 512)
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(0)).to(device)
    return f"matmul_f32_{n}", lambda: a @ a


def calibrate(device: str, budget_s: float = 0.3, timer: Callable[[], float] | None = None,
              warmup: int = 3, min_samples: int = 1) -> dict:
    """The calibration kernel timed like a case: its name, torch's threads (its time depends on them),
    median, IQR, raw samples and when."""
    name, fn = calibration_kernel(device)
    timing = time_callable(fn, device, budget_s, warmup=warmup, timer=timer, min_samples=min_samples)
    return {"kernel": name, "device": device, "threads": torch.get_num_threads(), "time_s_median": timing.median,
            "time_s_iqr": timing.iqr, "samples_s": timing.samples_s, "at": time.time()}
