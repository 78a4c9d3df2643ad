"""Fidelity of approximate patterns against global attention: exact values on inputs with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from harness.bench.quality import FidelityCache, fidelity, sample_rows
from harness.core.patterns import Pattern


def _equal_scores(n: int, h: int = 2, d: int = 4, seed: int = 0):
    """q = 0: every score is 0, so global attention is uniform over the keys it allows."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.zeros(1, h, n, d, dtype=torch.float64)
    k = torch.randn(1, h, n, d, generator=gen, dtype=torch.float64)
    v = torch.randn(1, h, n, d, generator=gen, dtype=torch.float64)
    return q, k, v


def test_a_window_wider_than_the_sequence_gives_up_nothing():
    q, k, v = (torch.randn(1, 2, 24, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    got = fidelity(q, k, v, Pattern("local", causal=True, window=40))
    assert got["fidelity_out_rel_error"] < 1e-12 and got["fidelity_mass_dropped"] < 1e-12
    assert abs(got["fidelity_kl"]) < 1e-12 and got["fidelity_rows"] == 24


def test_local_on_equal_scores_drops_the_share_of_keys_outside_the_window():
    n, w = 32, 3
    q, k, v = _equal_scores(n)
    got = fidelity(q, k, v, Pattern("local", causal=False, window=w))
    kept = [min(n - 1, p + w) - max(0, p - w) + 1 for p in range(n)]
    mass = [1 - c / n for c in kept]
    assert got["fidelity_mass_dropped"] == pytest.approx(sum(mass) / n, rel=1e-12)
    assert got["fidelity_kl"] == pytest.approx(sum(math.log(n / c) for c in kept) / n, rel=1e-12)
    # the outputs: mean of the window's values against the mean of all values
    out_g = v.mean(dim=2, keepdim=True).expand(-1, -1, n, -1)
    out_p = torch.stack([v[:, :, max(0, p - w):p + w + 1].mean(dim=2) for p in range(n)], dim=2)
    want = float(torch.linalg.vector_norm(out_p - out_g) / torch.linalg.vector_norm(out_g))
    assert got["fidelity_out_rel_error"] == pytest.approx(want, rel=1e-10)
    assert got["fidelity_out_rel_error_p50"] <= got["fidelity_out_rel_error_p90"]


def test_causal_local_keeps_the_first_rows_whole():
    n, w = 16, 4
    q, k, v = _equal_scores(n, h=1)
    got = fidelity(q, k, v, Pattern("local", causal=True, window=w))
    mass = [1 - min(p + 1, w + 1) / (p + 1) for p in range(n)]
    assert got["fidelity_mass_dropped"] == pytest.approx(sum(mass) / n, rel=1e-12)


def test_hierarchical_on_equal_scores_summarizes_the_other_segments():
    n, s = 24, 6  # 4 full segments
    q, k, v = _equal_scores(n, h=1)
    got = fidelity(q, k, v, Pattern("hierarchical", causal=False, segment=s))
    g = n // s
    assert got["fidelity_mass_dropped"] == pytest.approx((n - s) / n, rel=1e-12)
    # one softmax over s own keys and g - 1 summaries, all scores 0; a summary's weight spread over s keys
    slots = s + g - 1
    p_own, p_other = 1 / slots, 1 / (slots * s)
    kl = s * p_own * math.log(p_own * n) + (n - s) * p_other * math.log(p_other * n)
    assert got["fidelity_kl"] == pytest.approx(kl, rel=1e-10)
    # the summary of a segment carries the mean value of that segment: the output is a mix of means
    assert got["fidelity_out_rel_error"] > 0


def test_the_topk_oracle_never_does_worse_than_a_pattern_of_the_same_budget():
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 64, 16, generator=gen) * 2 for _ in range(3))
    got = fidelity(q, k, v, Pattern("local", causal=True, window=8))
    assert got["fidelity_topk_out_rel_error"] <= got["fidelity_out_rel_error"] + 1e-12


def test_grouped_query_heads_and_short_query_blocks():
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(2, 4, 5, 8, generator=gen)
    k, v = (torch.randn(2, 2, 40, 8, generator=gen) for _ in range(2))
    got = fidelity(q, k, v, Pattern("local", causal=True, window=10))
    assert got["fidelity_rows"] == 5 and 0 < got["fidelity_mass_dropped"] < 1


def test_rows_are_sampled_evenly_with_the_last_included():
    rows = sample_rows(10_000, 256)
    assert len(rows) == 256 and rows[0] == 0 and rows[-1] == 9_999
    assert list(sample_rows(7, 256)) == list(range(7))


def test_the_cache_computes_once_per_key():
    calls = []
    cache = FidelityCache()
    for _ in range(3):
        assert cache.get("a", lambda: calls.append(1) or {"x": 1}) == {"x": 1}
    assert len(calls) == 1
