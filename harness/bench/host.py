"""Evidence of contention, taken beside every timed region: how busy the rest of the host was, how
fast torch's CPU threads hand work to each other, and on CUDA the GPU's clock, temperature and
throttle reasons (nvidia-ml-py, when installed)."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import psutil
import torch


@dataclass(frozen=True)
class Snapshot:
    wall: float
    busy_s: float  # CPU seconds every process on the host has used (all cores, not idle or iowait)
    own_s: float  # CPU seconds this process has used


def snapshot() -> Snapshot:
    t = psutil.cpu_times()
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return Snapshot(time.perf_counter(), busy, time.process_time())


def others_core_s() -> float:
    """CPU seconds other processes have used so far, per core (read beside every timed block: its
    difference over a block, divided by the block's time, is the fraction of the cores they used). The
    host's count comes in the kernel's ticks (10 ms), so a short block's value is coarse, and may read
    slightly below 0."""
    now = snapshot()
    return (now.busy_s - now.own_s) / (os.cpu_count() or 1)


def host_busy(before: Snapshot, after: Snapshot) -> float | None:
    """CPU used by other processes between two snapshots, as a fraction of all cores (0: a quiet host)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return None
    others = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    return max(0.0, others / (wall * (os.cpu_count() or 1)))


def gpu_state(index: int = 0) -> dict:
    """SM clock (MHz), temperature (C) and active throttle reasons of a GPU; {} without nvidia-ml-py."""
    try:
        import pynvml  # optional (nvidia-ml-py): a missing library is no reason to fail a row
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        reasons = pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)
        idle = getattr(pynvml, "nvmlClocksThrottleReasonGpuIdle", 1)
        names = [n.removeprefix("nvmlClocksThrottleReason") for n in dir(pynvml)
                 if n.startswith("nvmlClocksThrottleReason") and isinstance(getattr(pynvml, n), int)
                 and getattr(pynvml, n) & reasons and getattr(pynvml, n) not in (0, idle)
                 and n != "nvmlClocksThrottleReasonAll"]
        return {"gpu_sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                "gpu_temp_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
                "gpu_throttle": ",".join(sorted(names))}
    except Exception:  # NVML absent or refusing: no evidence, not an error
        return {}


# ---- how fast torch's threads hand work to each other: read beside short multi-threaded CPU calls ---
SYNC_ELEMENTS = 1 << 17  # 512 KiB of float32: split across the threads, each part a few microseconds of work
SYNC_ADDS = 20  # in-place adds a call, each one a fork and join of torch's threads
SYNC_CALLS = 15  # timed calls (after two warm ones); their median is the reading


def sync_probe(calls: int = SYNC_CALLS) -> float:
    """How long torch's CPU threads take, now, to run ``SYNC_ADDS`` in-place adds on a 512 KiB tensor:
    the median of ``calls`` timed calls (about 0.15 ms each on a 2-core VM), nearly all of it the
    threads' fork and join. On a VM the cores can pass work to each other 1.3-1.8x slower for seconds
    to minutes at a time; a multi-threaded call of a few milliseconds then reads as much slower, while
    a matmul timed beside it (the calibration kernel, mostly arithmetic) stays within 10%. This probe
    tracks that state (docs/trust.md)."""
    x = torch.zeros(SYNC_ELEMENTS)

    def adds() -> None:
        for _ in range(SYNC_ADDS):
            x.add_(1.0)

    adds()
    adds()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        adds()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def sync_evidence(device: str) -> dict:
    """``{"sync_s": sync_probe()}`` on a CPU with more than one torch thread (where threads hand work
    to each other); ``{}`` elsewhere."""
    return {"sync_s": sync_probe()} if device == "cpu" and torch.get_num_threads() > 1 else {}
