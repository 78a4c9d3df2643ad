"""Measuring one case: time (torch.utils.benchmark), peak memory, error, and machine figures.

Nothing here catches errors: the runner turns exceptions into rows. Inputs are always built outside
the timed region, compilation (``Variant.prepare``) is timed on its own, and raw samples are kept.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass

import torch
import torch.utils.benchmark as tbench

from harness.case import Case
from harness.patterns import reference, relative_error
from harness.registry import Variant

NOISE_THRESHOLD = 0.1  # IQR / median above this flags a measurement as noisy
ERROR_MAX_ELEMENTS = 2**26  # largest B*H*N*M score matrix the float64 reference is run on (512 MiB)


@dataclass
class Timing:
    """Raw per-call samples in seconds; statistics are derived on read, never stored rounded."""

    samples_s: list[float]
    number_per_sample: int = 1
    warmup_calls: int = 0

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
                "time_samples_s": list(self.samples_s)}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_inputs(case: Case, seed: int = 0):
    """Random (never zero) q, k, v, and for fwd_bwd an upstream gradient, with a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    requires_grad = case.pass_ == "fwd_bwd"
    q, k, v = (torch.randn(case.shape, generator=gen).to(case.device, case.torch_dtype).requires_grad_(requires_grad)
               for _ in range(3))
    grad = torch.randn(case.shape, generator=gen).to(case.device, case.torch_dtype) if requires_grad else None
    return q, k, v, grad


def make_callable(variant: Variant, case: Case, inputs):
    """A zero-argument callable doing exactly the work to time (tritonbench's shape)."""
    q, k, v, grad = inputs
    pattern = case.pattern_obj
    if case.pass_ == "fwd":
        def fwd():
            with torch.no_grad():
                return variant(q, k, v, pattern)
        return fwd

    def fwd_bwd():
        out = variant(q, k, v, pattern, "fwd_bwd")
        return torch.autograd.grad(out, (q, k, v), grad)
    return fwd_bwd


def time_callable(fn, device: str, budget_s: float = 0.5, warmup: int = 2, timer=None) -> Timing:
    """Warm up, then torch.utils.benchmark's blocked_autorange for about ``budget_s`` seconds.

    The Timer synchronizes the accelerator around each block; ``timer`` (a clock returning seconds)
    can be injected, as in torch.utils.benchmark, so tests can use a fake clock.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    kwargs = {"timer": timer} if timer is not None else {}
    t = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads(), **kwargs)
    m = t.blocked_autorange(min_run_time=budget_s)
    return Timing(samples_s=list(m.times), number_per_sample=m.number_per_run, warmup_calls=warmup)


@contextlib.contextmanager
def _quiet_stderr_fd():
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


def peak_memory(fn, device: str) -> tuple[int, str]:
    """Peak bytes allocated by one call of ``fn`` above what was allocated before it, and the method.

    CUDA: torch.cuda's peak statistics (reset, run, read, minus allocated before).
    CPU: every allocation and free the call makes through torch's allocator, recorded by
    torch.profiler(profile_memory=True); the peak of their running sum. Inputs already exist, so
    they are excluded; memory freed inside the call is not counted twice.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        del result
        return int(peak), "torch.cuda.max_memory_allocated"
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr_fd():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = fn()
            del result
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        current += e.nbytes()
        peak = max(peak, current)
    return int(peak), "torch.profiler.profile_memory"


def error_twin(case: Case, max_elements: int = ERROR_MAX_ELEMENTS) -> Case:
    """The case itself when its reference fits in ``max_elements``; else a smaller twin, same pattern."""
    def elements(c: Case) -> int:
        return c.batch * c.heads * c.seq_len * c.seq_len
    if elements(case) <= max_elements:
        return case
    twin = case.replace(batch=1, heads=min(case.heads, 2))
    n = case.seq_len
    while n > 1 and elements(twin.replace(seq_len=n)) > max_elements:
        n //= 2
    if twin.segment is not None:
        twin = twin.replace(segment=max(1, min(twin.segment, n)))
    return twin.replace(seq_len=n)


class ReferenceCache:
    """Keeps the last few float64 reference outputs: the same inputs serve every variant of a shape."""

    def __init__(self, size: int = 2) -> None:
        self.size, self._items = size, {}

    def get(self, case: Case, inputs):
        key = (case.pattern_obj, case.shape, case.dtype, case.device)
        if key not in self._items:
            q, k, v, _ = inputs
            with torch.no_grad():
                self._items[key] = reference(q.detach(), k.detach(), v.detach(), case.pattern_obj)
            while len(self._items) > self.size:
                self._items.pop(next(iter(self._items)))
        return self._items[key]


def output_error(variant: Variant, case: Case, max_elements: int = ERROR_MAX_ELEMENTS,
                 cache: ReferenceCache | None = None) -> dict:
    """Relative error of the forward output against the float64 reference (on a twin if too big)."""
    twin = error_twin(case, max_elements)
    if twin != case:
        variant.prepare(twin.replace(pass_="fwd"))
    inputs = make_inputs(twin.replace(pass_="fwd"))
    q, k, v, _ = inputs
    with torch.no_grad():
        out = variant(q, k, v, twin.pattern_obj)
    ref = (cache or ReferenceCache(1)).get(twin.replace(pass_="fwd"), inputs)
    return {"rel_error": relative_error(out, ref), "error_seq_len": twin.seq_len,
            "error_batch": twin.batch, "error_heads": twin.heads, "error_on_twin": twin != case}


# ---- machine figures ----------------------------------------------------------------------------
def matmul_flops_per_s(device: str, dtype: torch.dtype, budget_s: float = 0.5) -> float:
    """Achievable matmul FLOP/s for ``dtype`` on ``device``: the ceiling rows are compared with."""
    n = 2048 if device == "cuda" else 1024
    a = torch.randn(n, n).to(device, dtype)
    b = torch.randn(n, n).to(device, dtype)
    timing = time_callable(lambda: a @ b, device, budget_s, warmup=2)
    return 2.0 * n**3 / timing.median


def calibration(device: str, budget_s: float = 0.3) -> dict:
    """A fixed reference kernel (float32 512x512 matmul) timed the same way as cases.

    Recorded at the start and end of every run so comparisons can divide out machine speed drift.
    """
    a = torch.randn(512, 512, generator=torch.Generator().manual_seed(0)).to(device)
    timing = time_callable(lambda: a @ a, device, budget_s, warmup=3)
    return {"kernel": "matmul_f32_512", "device": device, "time_s_median": timing.median,
            "time_s_iqr": timing.iqr, "samples_s": timing.samples_s, "at": time.time()}


def measure(variant: Variant, case: Case, budget_s: float = 0.5, ceiling: float | None = None,
            measure_error: bool = True, max_error_elements: int = ERROR_MAX_ELEMENTS,
            ref_cache: ReferenceCache | None = None, timer=None) -> dict:
    """Measure one supported case. Returns the metric fields of its row (status ``ok``)."""
    t0 = time.perf_counter()
    variant.prepare(case)
    sync(case.device)
    setup_s = time.perf_counter() - t0
    inputs = make_inputs(case)
    fn = make_callable(variant, case, inputs)
    timing = time_callable(fn, case.device, budget_s, timer=timer)
    peak, method = peak_memory(fn, case.device)
    rec = {"status": "ok", "reason": "", "setup_s": setup_s, **timing.fields(),
           "peak_mem_bytes": peak, "peak_mem_method": method}
    rec["flops_per_s"] = case.flops / timing.median if timing.median > 0 else None
    rec["ceiling_flops_per_s"] = ceiling
    rec["ceiling_fraction"] = rec["flops_per_s"] / ceiling if ceiling and rec["flops_per_s"] else None
    del inputs, fn
    if measure_error:
        rec.update(output_error(variant, case, max_error_elements, ref_cache))
    return rec
