"""The one timing loop, and the one calibration kernel per device.

This module imports nothing from attnbench (only the standard library and torch): the CI gate's
worker loads this very file by path, so that both trees it compares are timed by the same code.

``time_callable`` warms up, sizes a block of calls, then times blocks with the standard library's
``timeit`` (synchronizing the accelerator at every clock reading) for ``budget_s``, taking more
blocks until ``min_samples`` exist. Raw per-call samples are kept; statistics are derived on read.
"""

from __future__ import annotations

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


@dataclass
class Timing:
    """Raw per-call samples in seconds; statistics are derived on read, never stored rounded.

    ``cpu_samples_s``: for each sample, the CPU time this process spent per call over the same block
    (all its threads): next to the wall time, the evidence of time spent preempted by other processes.
    """

    samples_s: list[float]
    number_per_sample: int = 1
    warmup_calls: int = 0
    cpu_samples_s: list[float] | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def iqr(self) -> float:
        if len(self.samples_s) < 2:
            return 0.0
        q = statistics.quantiles(self.samples_s, n=4, method="inclusive")
        return q[2] - q[0]

    @property
    def noisy(self) -> bool:
        return self.iqr / self.median > NOISE_THRESHOLD if self.median > 0 else False

    def fields(self) -> dict:
        return {"time_s_median": self.median, "time_s_iqr": self.iqr, "time_s_min": min(self.samples_s),
                "time_s_max": max(self.samples_s), "time_n_samples": len(self.samples_s),
                "time_number_per_sample": self.number_per_sample, "time_noisy": self.noisy,
                "time_samples_s": list(self.samples_s),
                "time_cpu_samples_s": list(self.cpu_samples_s) if self.cpu_samples_s is not None else None}


class _DualClock:
    """A timer for timeit that returns wall time and notes the process's CPU time at every reading
    (on CUDA, ``wall`` synchronizes the device first).

    timeit reads its timer exactly twice per block (before and after the loop), so consecutive
    readings pair up into (wall, CPU) per block."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self.wall, self.readings = wall, []

    def __call__(self) -> float:
        cpu, now = time.process_time(), self.wall()
        self.readings.append(cpu)
        return now

    def last_blocks_cpu(self, count: int, number: int) -> list[float]:
        """Per-call CPU time of the last ``count`` blocks of ``number`` calls each."""
        pairs = list(zip(self.readings[0::2], self.readings[1::2]))[-count:] if count else []
        return [(end - start) / number for start, end in pairs]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


MIN_BLOCK_S = 1e-3  # shortest timed block: the clock's reading (~1 us) stays below 0.1% of it
MAX_NUMBER = 10**6  # calls per block at most (a call that takes no measurable time)
TARGET_SAMPLES = 10  # blocks are sized so that at least this many fit the budget: a median, not a mean of 2


def time_callable(fn: Callable[[], object], device: str, budget_s: float = 0.5, warmup: int = 2,
                  timer: Callable[[], float] | None = None, min_samples: int = 1) -> Timing:
    """Warm up, size a block (``number`` calls) so that ``TARGET_SAMPLES`` blocks, or twice
    ``min_samples``, fit in ``budget_s`` (at least ``MIN_BLOCK_S`` of calls, at least one call), then
    time blocks with the standard library's ``timeit`` until ``budget_s`` is spent and ``min_samples``
    samples exist.

    One sample is a block's time divided by its calls. The sizing blocks are not kept (they warm up
    further). On CUDA the clock synchronizes the device before every reading, so a block's time
    covers its kernels, not their launches. ``timer`` (a clock returning seconds; see ``CLOCKS``) can
    be injected, so the CI gate can time CPU time and tests can use a fake clock.

    torch.utils.benchmark's ``blocked_autorange`` was used before: it sizes blocks for 1e-4 relative
    overhead (50 ms blocks for a 50 us kernel), so five samples took ten times a small budget.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    base = timer or time.perf_counter
    if device == "cuda":
        def wall() -> float:
            torch.cuda.synchronize()
            return base()
    else:
        wall = base
    clock = _DualClock(wall)
    block = timeit.Timer(stmt=fn, timer=clock)
    target = max(budget_s / max(2 * min_samples, TARGET_SAMPLES), MIN_BLOCK_S)
    number, took = 1, block.timeit(1)
    while took < target and number < MAX_NUMBER:
        grow = target / took if took > 0 else 10.0
        number = min(MAX_NUMBER, max(number + 1, int(number * min(grow * 1.2, 10.0))))
        took = block.timeit(number)
    samples, spent = [took / number], took
    cpu = clock.last_blocks_cpu(1, number)
    while spent < budget_s or len(samples) < min_samples:
        took = block.timeit(number)
        samples.append(took / number)
        cpu += clock.last_blocks_cpu(1, number)
        spent += took
    return Timing(samples_s=samples, number_per_sample=number, warmup_calls=warmup, cpu_samples_s=cpu)


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
