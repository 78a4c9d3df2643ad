"""The engine: preparation happens once, the timed callable is the kernel, masks are cheap, flex never
recompiles while timed, and memory accounts for the prepared constants."""

import time

import pytest
import torch

from harness.bench.measure import measure
from harness.bench.memory import track_allocations
from harness.bench.prepare import prepare
from harness.bench.timing import time_callable
from harness.core.case import Case
from harness.core.errors import UnsupportedCaseError
from harness.core.patterns import Pattern
from harness.core.registry import get_variant


@pytest.mark.parametrize("name", ["naive", "sdpa_flash", "local", "hierarchical", "chunked"])
def test_validation_reasons_and_constants_run_once_per_case_not_per_call(name, monkeypatch):
    variant = get_variant(name)
    kind = [p for p in variant.patterns if p != "document"][-1]
    case = Case(name, kind, window=8 if kind == "local" else None, segment=8 if kind == "hierarchical" else None,
                heads=2, seq_len=64, head_dim=16)
    calls = {"reasons": 0, "constants": 0, "check_qkv": 0}
    reasons, constants = variant.not_supported_reasons, variant.constants

    def count(key, fn):
        def wrapped(*a, **k):
            calls[key] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(variant, "not_supported_reasons", count("reasons", reasons))
    monkeypatch.setattr(variant, "constants", count("constants", constants))
    import harness.core.registry as registry

    monkeypatch.setattr(registry, "check_qkv", count("check_qkv", registry.check_qkv))
    prepared = prepare(variant, case)
    assert calls == {"reasons": 1, "constants": 1, "check_qkv": 0}
    with prepared.context():
        timing = time_callable(prepared.fn, "cpu", budget_s=0.02, min_samples=5)
    assert timing.number_per_sample * len(timing.samples_s) >= 5
    assert calls == {"reasons": 1, "constants": 1, "check_qkv": 0}


def test_prepare_refuses_an_unsupported_case_with_its_reasons():
    with pytest.raises(UnsupportedCaseError, match="no CPU kernel"):
        prepare(get_variant("sdpa_efficient"), Case("sdpa_efficient", seq_len=16, heads=1))


@pytest.mark.parametrize("kind,causal", [("local", False), ("local", True), ("global", True), ("hierarchical", True)])
def test_masks_are_built_without_n_by_n_integer_temporaries(kind, causal):
    n = 1024
    pattern = Pattern(kind, causal, window=64 if kind == "local" else None, segment=32 if kind == "hierarchical" else None)
    alloc = track_allocations(lambda: pattern.mask(n), "cpu")
    cols = alloc.result.shape[1]
    assert alloc.result.dtype == torch.bool
    assert alloc.net_bytes <= n * cols + 64 * 1024  # the boolean result and O(N) position vectors
    assert alloc.peak_bytes <= 3 * n * cols + 64 * 1024  # at most two boolean temporaries beside it (int64: 8x)


def test_pairs_are_closed_form_for_any_length():
    t0 = time.perf_counter()
    n = 10**12
    assert Pattern("local", False, window=3).pairs(n) == n + 2 * (3 * n - 6)
    assert Pattern("local", True, window=3).pairs(n) == 6 + (n - 3) * 4
    assert Pattern("hierarchical", True, segment=10**6).pairs(n) > 0
    assert time.perf_counter() - t0 < 0.1


def test_rows_carry_mask_time_and_bytes_and_peak_counts_the_mask():
    """naive local, B=1 H=1 N=1024 w=128: one boolean N x N mask (prepared once) + scores + probabilities."""
    n = 1024
    case = Case("naive", "local", window=128, heads=1, seq_len=n, head_dim=64)
    rec = measure(get_variant("naive"), case, budget_s=0.02)
    assert rec["mask_s"] > 0 and rec["setup_s"] >= rec["mask_s"]
    assert abs(rec["mask_mem_bytes"] - n * n) <= 0.01 * n * n
    analytic = n * n * (4 + 4 + 1)  # float32 scores, float32 probabilities, boolean mask
    assert abs(rec["peak_mem_bytes"] - analytic) <= 0.15 * analytic, rec["peak_mem_bytes"] / analytic
    assert rec["rel_error"] < 1e-5


@pytest.mark.slow
def test_flex_compiles_in_prepare_and_never_recompiles_while_timed():
    """Compiled on distinct inputs in prepare; warm-up and timing run under fail_on_recompile and the
    dynamo frame counter does not move."""
    from torch._dynamo.utils import counters

    variant = get_variant("flex")
    case = Case("flex", "local", window=16, heads=2, seq_len=128, head_dim=16)
    prepared = prepare(variant, case)
    assert prepared.setup_s > prepared.mask_s > 0
    frames = sum(counters["frames"].values())
    with prepared.context():
        time_callable(prepared.fn, "cpu", budget_s=0.05, warmup=2, min_samples=5)
    assert sum(counters["frames"].values()) == frames, dict(counters["frames"])


def test_cuda_blocks_are_timed_to_the_end_of_their_kernels(monkeypatch):
    """On CUDA the clock synchronizes before every reading (a custom timer bypasses torch's own sync):
    here a fake synchronize that takes 3 ms of the fake clock must show up in every sample."""
    now = [0.0]
    syncs = []

    def synchronize():
        syncs.append(1)
        now[0] += 0.003  # the kernels launched since the last reading finish

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    t = time_callable(lambda: None, "cuda", budget_s=0.05, warmup=1, timer=lambda: now[0], min_samples=5)
    assert len(syncs) >= 2 * len(t.samples_s) and t.median > 0
    assert all(s * t.number_per_sample == pytest.approx(0.003) for s in t.samples_s)


def test_small_budgets_take_small_blocks():
    """A small call within a 0.02 s budget: blocks sized so that twice min_samples fit the budget
    (torch's blocked_autorange sized them for 1e-4 overhead: 50 ms blocks for a 50 us call)."""
    x = torch.randn(64, 64)
    t = time_callable(lambda: x @ x, "cpu", budget_s=0.02, min_samples=5)
    assert len(t.samples_s) >= 5 and t.number_per_sample > 1
    assert t.number_per_sample * min(t.samples_s) < 0.02  # a block is a fraction of the budget
