"""The references are the definition: check them against a per-query loop written from the spec."""

import math

import pytest
import torch

from harness.core.case import Case
from harness.core.errors import InputError
from harness.core.patterns import Pattern
from harness.core.reference import check_qkv, reference


def loop_reference(q, k, v, pattern: Pattern):
    """One query at a time, straight from the issue's wording (float64)."""
    q, k, v = (t.double() for t in (q, k, v))
    b, h, n, d = q.shape
    out = torch.empty_like(q)
    for i in range(n):
        keys, vals = [], []
        if pattern.kind == "hierarchical":
            s = pattern.segment
            g = i // s
            for j in range(g * s, min(n, (g + 1) * s)):
                if not pattern.causal or j <= i:
                    keys.append(k[:, :, j]), vals.append(v[:, :, j])
            for g2 in range(math.ceil(n / s)):
                if g2 != g and (not pattern.causal or g2 < g):
                    keys.append(k[:, :, g2 * s:(g2 + 1) * s].mean(dim=2))
                    vals.append(v[:, :, g2 * s:(g2 + 1) * s].mean(dim=2))
        else:
            for j in range(n):
                ok = True
                if pattern.kind == "local":
                    ok = (0 <= i - j <= pattern.window) if pattern.causal else abs(i - j) <= pattern.window
                elif pattern.causal:
                    ok = j <= i
                if ok:
                    keys.append(k[:, :, j]), vals.append(v[:, :, j])
        kk, vv = torch.stack(keys, dim=2), torch.stack(vals, dim=2)  # (B, H, M, D)
        w = torch.softmax((q[:, :, i:i + 1] @ kk.transpose(-1, -2)) / math.sqrt(d), dim=-1)
        out[:, :, i] = (w @ vv)[:, :, 0]
    return out


PATTERNS = [Pattern("global"), Pattern("global", True), Pattern("local", False, 3), Pattern("local", True, 3),
            Pattern("hierarchical", False, segment=4), Pattern("hierarchical", True, segment=4),
            Pattern("hierarchical", False, segment=50)]


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.label)
@pytest.mark.parametrize("n", [1, 5, 11])
def test_reference_matches_loop_definition(pattern, n):
    g = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(2, 2, n, 5, generator=g) for _ in range(3))
    torch.testing.assert_close(reference(q, k, v, pattern), loop_reference(q, k, v, pattern))


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.label)
@pytest.mark.parametrize("n", [1, 7, 64, 129])
def test_pairs_count_matches_mask(pattern, n):
    assert pattern.pairs(n) == int(pattern.mask(n).sum())


def test_flops_convention():
    c = Case("naive", "global", seq_len=16, heads=2, batch=3, head_dim=8)
    assert c.flops == 4 * 3 * 2 * 8 * 16 * 16
    assert c.replace(pass_="fwd_bwd").flops == pytest.approx(3.5 * c.flops)
    assert c.replace(causal=True).pairs == 16 * 17 // 2


def test_case_is_frozen_hashable_and_stable():
    a = Case("chunked", "local", window=4, params=(("chunk_q", 8), ("chunk_k", 4)))
    b = Case("chunked", "local", window=4, params=(("chunk_k", 4), ("chunk_q", 8)))
    assert a == b and hash(a) == hash(b) and a.id == b.id
    assert Case.from_record(a.to_record()) == a
    with pytest.raises(AttributeError):
        a.seq_len = 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="local", window=0), "window"),
    (dict(kind="local", window=None), "window"),
    (dict(kind="hierarchical", segment=0), "segment"),
    (dict(kind="diagonal"), "diagonal"),
])
def test_bad_pattern_is_named(kwargs, match):
    with pytest.raises(InputError, match=match):
        Pattern(**kwargs)


@pytest.mark.parametrize("shapes, dtypes, match", [
    ([(1, 2, 3, 4), (1, 2, 3, 5), (1, 2, 3, 4)], [torch.float32] * 3, r"shapes differ.*\(1, 2, 3, 5\)"),
    ([(2, 3, 4)] * 3, [torch.float32] * 3, r"rank 4.*\(2, 3, 4\)"),
    ([(1, 2, 3, 4)] * 3, [torch.float32, torch.float16, torch.float32], "dtypes differ.*float16"),
])
def test_bad_qkv_rejected_with_shapes_and_dtypes(shapes, dtypes, match):
    q, k, v = (torch.randn(s, dtype=dt) for s, dt in zip(shapes, dtypes))
    with pytest.raises(InputError, match=match):
        check_qkv(q, k, v)
