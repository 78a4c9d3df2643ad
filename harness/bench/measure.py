"""Measuring one case: time, peak memory, whether its output is right (harness.bench.verify); and,
once per cell (``fidelity_fields``), for an approximate pattern what it gives up against global
attention (harness.bench.quality).

Nothing here catches errors: the executors turn exceptions into rows. ``harness.bench.prepare``
keeps validation, constants and compilation out of the timed call; raw samples are kept.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import torch

from harness.bench.verify import ReferenceCache, check_case
from harness.bench.host import gpu_state, host_busy, others_core_s, snapshot, sync_evidence
from harness.bench.memory import peak_memory
from harness.bench.inputs import make_inputs, pattern_perplexity, source_of
from harness.bench.prepare import prepare
from harness.bench.quality import FidelityCache, fidelity
from harness.bench.timing import calibration_kernel, time_callable
from harness.core.case import Case
from harness.core.patterns import make_doc_lens
from harness.core.registry import Variant

CALIBRATION_BUDGET_S = 0.05  # one probe of the calibration kernel (waiting for a quiet machine)
ERROR_MAX_ELEMENTS = 2**26  # largest B*H*N*M score matrix the float64 reference is run on (512 MiB)


def error_twin(case: Case, max_elements: int = ERROR_MAX_ELEMENTS) -> Case:
    """The case itself when its reference fits in ``max_elements``; else a smaller twin, same pattern:
    batch 1, at most 2 heads (one group for grouped-query heads), shorter lengths."""
    def elements(c: Case) -> int:
        return c.batch * c.heads * c.q_len * c.seq_len
    if elements(case) <= max_elements:
        return case
    heads, kv_heads = (min(case.heads, 2),) * 2 if case.kv_heads == case.heads else (case.group, 1)
    twin = case.replace(batch=1, heads=heads, kv_heads=kv_heads)
    n, q = case.seq_len, case.q_len
    while n > 1 and twin.batch * heads * min(q, n) * n > max_elements:
        n //= 2
    changes = {"seq_len": n, "q_len": min(q, n)}
    if twin.segment is not None:
        changes["segment"] = max(1, min(twin.segment, n))
    if twin.doc_lens is not None:
        changes["doc_lens"] = make_doc_lens(n, min(len(twin.doc_lens), n))
    return twin.replace(**changes)


def output_error(variant: Variant, case: Case, max_elements: int = ERROR_MAX_ELEMENTS,
                 cache: ReferenceCache | None = None) -> dict:
    """The forward output's relative error against the float64 reference (on a twin if too big), with
    the twin's figures and ``wrong``: why the output fails its pattern, or None."""
    return check_case(variant, case, error_twin(case, max_elements).replace(pass_="fwd"), None, cache)


UNTIMED_FIELDS = ("peak_mem_bytes", "peak_mem_method", "rel_error", "grad_rel_error", "error_seq_len", "error_batch",
                  "error_heads", "error_on_twin")  # what a re-measurement keeps from the first (``earlier``)


def measure(variant: Variant, case: Case, budget_s: float = 0.5, ceiling: float | None = None,
            measure_error: bool = True, max_error_elements: int = ERROR_MAX_ELEMENTS,
            ref_cache: ReferenceCache | None = None, timer=None, min_samples: int = 1,
            bandwidth: float | None = None, earlier: dict | None = None, cost: Counter | None = None,
            slow_above: float | None = None, short: Callable[[float], float] | None = None) -> dict:
    """Measure one supported case. Returns the metric fields of its row (status ``ok``), with the
    evidence of how quiet the machine was: the calibration kernel timed beside the case (a warm call
    right after each of its timing blocks; ``calibration_s`` is their median beside the samples the
    statistics are of: with ``slow_above``, a calibration time in seconds, those timed while it ran at
    most that long, where enough exist; harness.bench.timing), how busy the rest of the host was while
    those samples were timed (with an injected ``timer``, over the whole timing), torch's threads, on a
    CPU with several threads how fast they synchronize right after the timing (``sync_s``:
    harness.bench.host.sync_probe; not with an injected ``timer``), and on CUDA the GPU's clock,
    temperature and throttle reasons.

    ``earlier``: the row of an earlier measurement of the same case (an ok one): this one re-times it
    and keeps its peak memory and its check (``UNTIMED_FIELDS``), which do not depend on how busy the
    machine is.

    ``short`` (seconds a call takes -> seconds of budget): the budget of a call as long as its first
    timed call, where less than ``budget_s`` (harness.bench.timing.time_callable).

    Peak memory is measured on the first warm-up call (``time_callable``'s ``first``), not timed.

    ``cost`` (a Counter, or None) is added the seconds of each step: ``prepare`` (inputs, constants,
    compilation), ``timing`` (warm-up and timed calls), ``peak memory`` (that warm-up call) and ``check``."""
    cost = cost if cost is not None else Counter()
    t0 = time.perf_counter()
    prepared = prepare(variant, case)
    cost["prepare"] += time.perf_counter() - t0
    _, beside = calibration_kernel(case.device)
    evidence = {"torch_threads": torch.get_num_threads()}
    peak: dict = {}

    def first() -> None:  # the first warm-up call, its allocations recorded
        t = time.perf_counter()
        peak["bytes"], peak["method"] = peak_memory(prepared.fn, case.device)
        peak["s"] = time.perf_counter() - t

    with prepared.context():
        before = snapshot()
        t0 = time.perf_counter()
        timing = time_callable(prepared.fn, case.device, budget_s, timer=timer, min_samples=min_samples, beside=beside,
                               first=first if earlier is None else None, slow_above=slow_above,
                               host=others_core_s if timer is None else None, short=short)
        cost["timing"] += time.perf_counter() - t0 - peak.get("s", 0.0)
        cost["peak memory"] += peak.get("s", 0.0)
        evidence["calibration_s"] = timing.beside_median
        evidence["host_busy"] = timing.host_busy if timing.host_busy is not None else host_busy(before, snapshot())
        if timer is None:  # right after the timing, in the same state of the machine (a fake clock: none)
            evidence.update(sync_evidence(case.device))
        if case.device == "cuda":
            evidence.update(gpu_state(torch.cuda.current_device()))
    rec = {"status": "ok", "reason": "", **evidence, "setup_s": prepared.setup_s, "mask_s": prepared.mask_s, **timing.fields(),
           "mask_mem_bytes": prepared.mask_mem_bytes}
    if earlier is not None:
        rec.update({k: earlier[k] for k in UNTIMED_FIELDS if k in earlier})
    else:
        rec.update(peak_mem_bytes=peak["bytes"] + prepared.mask_mem_bytes, peak_mem_method=peak["method"])
    rec["flops_per_s"] = case.flops / timing.median if timing.median > 0 else None
    rec["ceiling_flops_per_s"] = ceiling
    rec["ceiling_fraction"] = rec["flops_per_s"] / ceiling if ceiling and rec["flops_per_s"] else None
    rec["bytes_per_s"] = case.bytes / timing.median if timing.median > 0 else None
    rec["bandwidth_bytes_per_s"] = bandwidth
    rec["bandwidth_fraction"] = rec["bytes_per_s"] / bandwidth if bandwidth and rec["bytes_per_s"] else None
    if measure_error and earlier is None:  # after timing, on fresh inputs: harness.bench.verify
        t0 = time.perf_counter()
        checked = check_case(variant, case, error_twin(case, max_error_elements), prepared, ref_cache)
        cost["check"] += time.perf_counter() - t0
        wrong = checked.pop("wrong")
        rec.update(checked)
        if wrong:
            rec.update(status="wrong", reason=wrong)
    return rec


def fidelity_fields(case: Case, cache: FidelityCache | None = None) -> dict:
    """What the case's pattern gives up against global attention on the case's own (timed) inputs
    (harness.bench.quality), shared by every variant and pass of the configuration through ``cache``;
    on a language model's inputs also its perplexity with the pattern in every layer."""
    cache = cache if cache is not None else FidelityCache(1)
    t0 = time.perf_counter()
    key = (case.pattern_obj, case.inputs, case.inputs_layer, case.shape, case.kv_shape, case.dtype, case.device)
    fields = cache.get(key, lambda: fidelity(*make_inputs(case).qkv(), case.pattern_obj))
    if case.inputs != "random" and source_of(case).kind == "smollm2":
        fields["fidelity_ppl"] = cache.get(("ppl", case.pattern_obj, case.inputs, case.seq_len),
                                           lambda: {"ppl": pattern_perplexity(case)})["ppl"]
    fields["fidelity_s"] = time.perf_counter() - t0  # near 0 when the configuration's fidelity is cached
    return fields
