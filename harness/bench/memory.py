"""Memory a call allocates, above what was allocated before it.

CUDA: torch.cuda's statistics (reset the peak, run, read, minus what was allocated before).
CPU: every allocation and free the call makes through torch's allocator, recorded by
``torch.profiler(profile_memory=True)``; the peak of their running sum, and where it ends (net).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile

CUDA_METHOD = "torch.cuda.max_memory_allocated"
CPU_METHOD = "torch.profiler.profile_memory"


@dataclass
class Allocation:
    result: Any  # what the call returned (None when it was not kept)
    peak_bytes: int  # the most the call held at once above what existed before it
    net_bytes: int  # what it still holds when it returns (its result, caches)
    method: str


@contextlib.contextmanager
def quiet_stderr_fd():
    """Silence C-level writes to fd 2 (kineto prints profiler start/stop lines there)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def track_allocations(fn: Callable[[], Any], device: str, keep_result: bool = True) -> Allocation:
    """Run ``fn`` once and account for the memory it allocates (see the module docstring)."""
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        if not keep_result:
            result = None
        net = torch.cuda.memory_allocated() - before
        return Allocation(result, int(peak), int(net), CUDA_METHOD)
    with quiet_stderr_fd():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = fn()
            if not keep_result:
                result = None
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        current += e.nbytes()
        peak = max(peak, current)
    return Allocation(result, int(peak), int(current), CPU_METHOD)


def peak_memory(fn: Callable[[], Any], device: str) -> tuple[int, str]:
    """Peak bytes one call of ``fn`` allocates above what existed before it, and the method used."""
    alloc = track_allocations(fn, device, keep_result=False)
    return alloc.peak_bytes, alloc.method
