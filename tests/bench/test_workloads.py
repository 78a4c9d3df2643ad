"""Every variant against the float64 reference on the workloads of language models: grouped-query and
multi-query heads, decoding (q_len < kv_len, queries at the end of the keys), packed documents
(documents of length 1), a window wider than the keys, head dims 128 and 256; forward and backward.
Only the cases a variant supports are collected; a variant may decline a case, but only with reasons;
naive and chunked decline none of their patterns."""

import pytest
import torch

from harness.bench.inputs import make_inputs
from harness.bench.prepare import prepare
from harness.core.case import Case
from harness.core.reference import reference_with_grads, relative_error
from harness.core.registry import discover, get_variant

# (batch, heads, kv_heads, q_len, kv_len, head_dim)
SHAPES = {
    "mqa": (2, 4, 1, 37, 37, 16),
    "gqa2": (1, 4, 2, 33, 33, 16),
    "gqa4-decode1": (2, 8, 2, 1, 1000, 16),
    "decode3": (1, 2, 2, 3, 1000, 16),
    "d128": (1, 2, 1, 20, 20, 128),
    "d256-decode": (1, 2, 2, 5, 40, 256),
}
PATTERNS = {
    "global": {},
    "local": {"window": 16},
    "local-wide": {"window": 2000},  # wider than every kv_len here
    "hierarchical": {"segment": 9},
    "document": {},  # lengths (1, 1, kv_len - 3, 1): documents of length 1 at both ends
}
PARAMS = {"chunked": {"chunk_q": 8, "chunk_k": 16}, "local": {"block": 8}, "hierarchical": {"seg_block": 2}}
# Each flex cell compiles (about 7 s with a cold inductor cache): one decoding cell here; multi-query heads
# and every pattern in tests/bench/test_correctness.py.
FLEX_CELLS = {("gqa4-decode1", "local")}


def make_case(name, shape, pattern, causal, pass_):
    b, h, h_kv, q_len, kv_len, d = SHAPES[shape]
    kind = pattern.split("-")[0]
    extra = dict(PATTERNS[pattern])
    if kind == "document":
        extra["doc_lens"] = (1, 1, kv_len - 3, 1)
    return Case(name, kind, causal, device="cpu", dtype="float32", batch=b, heads=h, kv_heads=h_kv, q_len=q_len,
                seq_len=kv_len, head_dim=d, pass_=pass_, params=tuple(PARAMS.get(name, {}).items()), **extra)


def all_cells():
    for name in discover():
        for shape in SHAPES:
            for pattern in PATTERNS:
                if name == "flex" and (shape, pattern) not in FLEX_CELLS:
                    continue
                for causal in (True,) if name == "flex" else (False, True):
                    for pass_ in ("fwd", "fwd_bwd"):
                        yield name, shape, pattern, causal, pass_


def declined(cell) -> list[str]:
    name, shape, pattern, causal, pass_ = cell
    return get_variant(name, **PARAMS.get(name, {})).not_supported_reasons(make_case(*cell))


SUPPORTED = [c for c in all_cells() if not declined(c)]  # only these are collected


def test_every_variant_with_a_cpu_kernel_runs_some_workload_and_declines_with_reasons():
    """What the collection leaves out is declined with reasons; naive and chunked decline none of
    their patterns; every variant available on CPU has workloads collected."""
    ran = {c[0] for c in SUPPORTED}
    for cell in all_cells():
        reasons = declined(cell)
        variant = get_variant(cell[0], **PARAMS.get(cell[0], {}))
        if reasons:
            assert all(isinstance(r, str) and r for r in reasons), (cell, reasons)
            assert cell[0] not in ("naive", "chunked") or make_case(*cell).pattern not in variant.patterns, reasons
    for name in discover():
        if not get_variant(name, **PARAMS.get(name, {})).device_reasons("cpu"):
            assert name in ran, f"{name} runs on CPU but no workload was collected for it"


@pytest.mark.parametrize("name,shape,pattern,causal,pass_", [
    pytest.param(*c, id=f"{c[0]}-{c[1]}-{c[2]}-{'causal' if c[3] else 'full'}-{c[4]}") for c in SUPPORTED])
def test_variant_matches_reference(name, shape, pattern, causal, pass_):
    variant = get_variant(name, **PARAMS.get(name, {}))
    case = make_case(name, shape, pattern, causal, pass_)
    assert not variant.not_supported_reasons(case)
    inputs = make_inputs(case)
    prepared = prepare(variant, case, inputs)
    q, k, v = inputs.qkv()
    with variant.timing_context(case), torch.set_grad_enabled(pass_ == "fwd_bwd"):
        out = prepared.kernel(q, k, v)
    assert out.shape == case.shape
    if pass_ == "fwd":
        ref, _ = reference_with_grads(q, k, v, case.pattern_obj, torch.zeros_like(out))
        assert relative_error(out, ref) <= 1e-5
        return
    ref, grads = reference_with_grads(q, k, v, case.pattern_obj, inputs.grad_out)
    out.backward(inputs.grad_out)
    assert relative_error(out, ref) <= 1e-5
    for t, g in zip((q, k, v), grads):
        assert t.grad.shape == g.shape and relative_error(t.grad, g) <= 1e-4
