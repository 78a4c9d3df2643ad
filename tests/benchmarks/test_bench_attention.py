"""pytest-benchmark: one benchmark per variant and pattern, small CPU float32 forward (docs/benchmarks.md).

Cases come from the harness sweep (``build_config`` + ``expand``), so they are the same frozen
``Case`` objects the runner measures; a case the variant cannot run is skipped with its reasons.
The timed callable is ``harness.bench.prepare``'s, followed by ``sync``; peak memory
(``harness.bench.memory.peak_memory`` plus the prepared constants) is measured once, outside the timed calls, and stored with the
FLOP count and the achieved FLOP/s in ``benchmark.extra_info`` (saved with --benchmark-autosave).

With the project's default ``--benchmark-disable`` each case runs once, as a smoke test; run
``pytest tests/benchmarks --benchmark-enable ...`` to time them.
"""

from __future__ import annotations

import pytest

from harness.bench.heap import pin_allocator
from harness.bench.memory import peak_memory
from harness.bench.prepare import prepare
from harness.bench.timing import sync
from harness.core.patterns import PATTERN_KINDS
from harness.core.registry import get_variant
from harness.run.config import expand
from harness.run.validate import build_config

GRID = {
    "name": "pytest-benchmark",
    "device": "cpu",
    "variants": ["all"],
    "patterns": list(PATTERN_KINDS),
    "causal": [False],
    "seq_lens": [256],
    "heads": [4],
    "batch": [1],
    "head_dims": [64],
    "dtypes": ["float32"],
    "passes": ["fwd"],
    "window": 64,
    "segment": "sqrt",
}
CONFIG = build_config(GRID)
CASES = expand(CONFIG)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.variant}-{c.pattern}" for c in CASES])
def test_fwd(benchmark, case):
    variant = get_variant(case.variant, **dict(case.params))
    reasons = variant.not_supported_reasons(case)
    if reasons:
        pytest.skip(f"{case.id}: " + "; ".join(reasons))
    if variant.compiles and benchmark.disabled and case.pattern != "local":  # each compile: ~7 s on a cold CPU cache
        pytest.skip(f"{case.id}: a smoke run (--benchmark-disable) compiles {case.variant} for one pattern "
                    "(local); --benchmark-enable times every pattern")
    pin_allocator(CONFIG.execution.allocator)  # as a sweep measures (harness.bench.heap)
    prepared = prepare(variant, case)  # reasons, masks, compilation: never timed
    fn = prepared.fn

    def call():
        out = fn()
        sync(case.device)
        return out

    with prepared.context():  # entered once around every call, as the sweep's timer does
        for _ in range(2):  # the harness's warm-up (time_callable's default)
            call()
        peak_bytes, peak_method = peak_memory(fn, case.device)  # outside the timed calls
        peak_bytes += prepared.mask_mem_bytes

    benchmark.group = case.pattern_obj.label
    benchmark.extra_info.update({"case_id": case.id, "peak_mem_bytes": peak_bytes,
                                 "peak_mem_method": peak_method, "flops": case.flops})
    with prepared.context():
        out = benchmark(call)

    assert out.shape == case.shape
    assert peak_bytes > 0
    if benchmark.stats is not None:  # None under --benchmark-disable: no timing, so no FLOP/s
        benchmark.extra_info["flops_per_s"] = case.flops / benchmark.stats.stats.median
