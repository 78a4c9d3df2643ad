"""Evidence of contention, taken beside every timed region: how busy the rest of the host was, and
on CUDA the GPU's clock, temperature and throttle reasons (nvidia-ml-py, when installed)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil


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
