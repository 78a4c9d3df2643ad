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


# ---- the patterns efficient attention uses: sink, dilated, bigbird, topk ------------------------
def allowed(pattern: Pattern, p: int, j: int) -> bool:
    """Whether query position p may attend key position j, straight from the definitions' wording."""
    w = pattern.window
    window = (0 <= p - j <= w) if pattern.causal else abs(p - j) <= w
    if pattern.kind == "sink":
        return window or (j < pattern.sinks and (not pattern.causal or j <= p))
    if pattern.kind == "dilated":
        return window and (p - j) % pattern.stride == 0
    if pattern.kind == "bigbird":
        return (window or j < pattern.globals or p < pattern.globals) and (not pattern.causal or j <= p)
    raise AssertionError(pattern.kind)


def brute_mask(pattern: Pattern, q_len: int, kv_len: int) -> torch.Tensor:
    o = kv_len - q_len
    return torch.tensor([[allowed(pattern, o + i, j) for j in range(kv_len)] for i in range(q_len)],
                        dtype=torch.bool).reshape(q_len, kv_len)


NEW = [Pattern(kind, causal, window=w, **{extra: e})
       for kind, extra in (("sink", "sinks"), ("dilated", "stride"), ("bigbird", "globals"))
       for causal in (False, True) for w in (1, 3, 6) for e in (1, 2, 5, 9)]


@pytest.mark.parametrize("pattern", NEW, ids=lambda p: p.label)
def test_new_masks_match_their_definitions(pattern):
    for kv_len in (1, 2, 4, 7, 12):
        for q_len in sorted({1, min(2, kv_len), kv_len // 2 or 1, kv_len}):  # decoding, q_len < kv_len, square
            assert torch.equal(pattern.mask(q_len, kv_len), brute_mask(pattern, q_len, kv_len)), (q_len, kv_len)


@pytest.mark.parametrize("pattern", NEW, ids=lambda p: p.label)
def test_new_pairs_are_the_masks_sums(pattern):
    for kv_len in (1, 2, 3, 5, 8, 13, 21, 34, 50):
        for q_len in range(1, kv_len + 1):
            assert pattern.pairs(q_len, kv_len) == int(pattern.mask(q_len, kv_len).sum()), (q_len, kv_len)


def test_pairs_match_masks_on_larger_shapes():
    for pattern in (Pattern("sink", False, window=64, sinks=4), Pattern("sink", True, window=64, sinks=100),
                    Pattern("dilated", False, window=100, stride=7), Pattern("dilated", True, window=31, stride=4),
                    Pattern("bigbird", False, window=16, globals=40), Pattern("bigbird", True, window=200, globals=3)):
        for q_len, kv_len in ((300, 300), (1, 300), (77, 300), (129, 129)):
            assert pattern.pairs(q_len, kv_len) == int(pattern.mask(q_len, kv_len).sum()), (pattern.label, q_len)


def test_dilated_with_stride_one_is_local_and_sink_bigbird_contain_the_window():
    for causal in (False, True):
        local = Pattern("local", causal, window=5)
        assert torch.equal(Pattern("dilated", causal, window=5, stride=1).mask(9, 20), local.mask(9, 20))
        for p in (Pattern("sink", causal, window=5, sinks=3), Pattern("bigbird", causal, window=5, globals=3)):
            m = p.mask(9, 20)
            assert bool((m | local.mask(9, 20)).eq(m).all()) and int(m.sum()) > int(local.mask(9, 20).sum())


def test_window_sinks_and_globals_wider_than_the_keys_give_global():
    for causal in (False, True):
        full = Pattern("global", causal).mask(3, 5)
        assert torch.equal(Pattern("sink", causal, window=1, sinks=99).mask(3, 5), full)
        assert torch.equal(Pattern("bigbird", causal, window=1, globals=99).mask(3, 5), full)
        assert torch.equal(Pattern("dilated", causal, window=99, stride=1).mask(3, 5), full)


def brute_topk(pattern: Pattern, scores: torch.Tensor) -> torch.Tensor:
    """Per query: the topk highest scores among the keys it may see (no ties in random float64 scores)."""
    *lead, q_len, kv_len = scores.shape
    flat = scores.reshape(-1, q_len, kv_len)
    out = torch.zeros_like(flat, dtype=torch.bool)
    for b in range(flat.shape[0]):
        for i in range(q_len):
            p = kv_len - q_len + i
            seen = [j for j in range(kv_len) if not pattern.causal or j <= p]
            for j in sorted(seen, key=lambda j: -float(flat[b, i, j]))[:pattern.topk]:
                out[b, i, j] = True
    return out.reshape(scores.shape)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("k", [1, 3, 8, 50])
def test_topk_mask_keeps_the_highest_scores_it_may_see(causal, k):
    pattern = Pattern("topk", causal, topk=k)
    g = torch.Generator().manual_seed(k)
    for q_len, kv_len in ((1, 1), (4, 4), (3, 11), (11, 11), (1, 20)):
        scores = torch.randn(2, 3, q_len, kv_len, dtype=torch.float64, generator=g)
        mask = pattern.mask(q_len, kv_len, scores=scores)
        assert mask.shape == scores.shape and torch.equal(mask, brute_topk(pattern, scores))
        assert int(mask.sum()) == 6 * pattern.pairs(q_len, kv_len)  # the same count in every (batch, head)


def test_topk_pairs_closed_form():
    for causal in (False, True):
        for k in (1, 2, 5, 40):
            pattern = Pattern("topk", causal, topk=k)
            for kv_len in (1, 2, 7, 30):
                for q_len in range(1, kv_len + 1):
                    o = kv_len - q_len
                    seen = [(p + 1 if causal else kv_len) for p in range(o, kv_len)]
                    assert pattern.pairs(q_len, kv_len) == sum(min(k, s) for s in seen)


def test_topk_ties_are_broken_deterministically():
    pattern = Pattern("topk", False, topk=2)
    scores = torch.zeros(1, 4, 6, dtype=torch.float64)  # every key ties
    masks = [pattern.mask(4, 6, scores=scores) for _ in range(3)]
    assert all(torch.equal(m, masks[0]) for m in masks) and int(masks[0].sum()) == 8


def test_topk_needs_the_scores_and_others_ignore_them():
    with pytest.raises(InputError, match=r"topk\(k=4\).*depends on the scores.*hint"):
        Pattern("topk", topk=4).mask(3, 5)
    with pytest.raises(InputError, match=r"\(2, 5, 3\).*\(q_len, kv_len\) = \(3, 5\).*hint"):
        Pattern("topk", topk=4).mask(3, 5, scores=torch.zeros(2, 5, 3))
    local = Pattern("local", window=1)
    assert torch.equal(local.mask(3, 5, scores=torch.zeros(3, 5)), local.mask(3, 5))


def loop_reference_new(q, k, v, pattern: Pattern):
    """One query at a time (float64), q_len <= kv_len, from the definitions."""
    q, k, v = (t.double() for t in (q, k, v))
    b, h, q_len, d = q.shape
    kv_len = k.shape[2]
    out = torch.empty_like(q)
    for bi in range(b):
        for hi in range(h):
            for i in range(q_len):
                p = kv_len - q_len + i
                s = (k[bi, hi] @ q[bi, hi, i]) / math.sqrt(d)  # (K,)
                if pattern.kind == "topk":
                    seen = [j for j in range(kv_len) if not pattern.causal or j <= p]
                    keys = sorted(seen, key=lambda j: -float(s[j]))[:pattern.topk]
                else:
                    keys = [j for j in range(kv_len) if allowed(pattern, p, j)]
                w = torch.softmax(s[keys], dim=0)
                out[bi, hi, i] = w @ v[bi, hi, keys]
    return out


@pytest.mark.parametrize("pattern", [Pattern("sink", c, window=2, sinks=3) for c in (False, True)]
                         + [Pattern("dilated", c, window=5, stride=2) for c in (False, True)]
                         + [Pattern("bigbird", c, window=1, globals=2) for c in (False, True)]
                         + [Pattern("topk", c, topk=3) for c in (False, True)], ids=lambda p: p.label)
@pytest.mark.parametrize("q_len, kv_len", [(1, 1), (9, 9), (2, 9), (1, 9)])
def test_reference_of_new_patterns_matches_the_loop(pattern, q_len, kv_len):
    g = torch.Generator().manual_seed(kv_len)
    q = torch.randn(2, 2, q_len, 5, generator=g)
    k, v = (torch.randn(2, 2, kv_len, 5, generator=g) for _ in range(2))
    torch.testing.assert_close(reference(q, k, v, pattern), loop_reference_new(q, k, v, pattern))


def test_new_labels_and_existing_ids():
    assert Pattern("sink", window=128, sinks=4).label == "sink(w=128,s=4)"
    assert Pattern("dilated", True, window=256, stride=2).label == "dilated(w=256,d=2)-causal"
    assert Pattern("bigbird", window=128, globals=4).label == "bigbird(w=128,g=4)"
    assert Pattern("topk", topk=64).label == "topk(k=64)"
    assert Pattern("local", True, window=64, sinks=4, topk=3).label == "local(w=64)-causal"  # unused ones dropped
    # ids of the existing patterns are unchanged
    assert Case("naive", "local", window=16, heads=2, seq_len=64, head_dim=8).id == \
        "naive/local(w=16)/cpu/float32/b1h2n64d8/fwd"
    assert Case("naive", "hierarchical", True, segment=8, seq_len=64).id == \
        "naive/hierarchical(s=8)-causal/cpu/float32/b1h8n64d64/fwd"
    assert Case("naive", "sink", window=128, sinks=4, seq_len=256).id == \
        "naive/sink(w=128,s=4)/cpu/float32/b1h8n256d64/fwd"


@pytest.mark.parametrize("kwargs, words", [
    (dict(kind="sink", window=4), ["sinks", "None", "sink", "hint"]),
    (dict(kind="sink", window=4, sinks=0), ["sinks", "0", "integer >= 1"]),
    (dict(kind="sink", sinks=4), ["window", "None", "sink"]),
    (dict(kind="dilated", window=4, stride=0), ["stride", "0"]),
    (dict(kind="dilated", window=4, stride=True), ["stride", "True"]),
    (dict(kind="bigbird", window=4, globals=1.5), ["globals", "1.5"]),
    (dict(kind="bigbird", window=0, globals=2), ["window", "0", "bigbird"]),
    (dict(kind="topk"), ["topk", "None", "hint: pass e.g. topk=64"]),
    (dict(kind="topk", topk=-3), ["topk", "-3"]),
])
def test_bad_new_pattern_parameters_are_named(kwargs, words):
    with pytest.raises(InputError) as info:
        Pattern(**kwargs)
    msg = str(info.value)
    assert "\n" not in msg and "hint" in msg
    for word in words:
        assert word in msg, (word, msg)


def test_case_fields_of_the_new_patterns():
    sink = Case("naive", "sink", window=8, sinks=2, stride=3, globals=4, topk=5, segment=6, seq_len=32)
    assert (sink.window, sink.sinks, sink.stride, sink.globals, sink.topk, sink.segment) == \
        (8, 2, None, None, None, None)
    assert sink.pairs == Pattern("sink", False, window=8, sinks=2).pairs(32)
    assert sink.flops == 4 * sink.batch * sink.heads * sink.head_dim * sink.pairs
    top = Case("naive", "topk", True, topk=5, window=8, seq_len=32, q_len=4)
    assert (top.window, top.topk, top.pairs) == (None, 5, 4 * 5)
    for case in (sink, top, Case("naive", "dilated", window=8, stride=2, seq_len=32),
                 Case("naive", "bigbird", True, window=8, globals=3, seq_len=32, kv_heads=2)):
        rec = case.to_record()
        assert Case.from_record(rec) == case
        assert all(k in rec for k in ("sinks", "stride", "globals", "topk"))
    with pytest.raises(InputError, match="sinks"):
        Case("naive", "sink", window=8)
    old = Case("naive", "local", window=8, seq_len=32).to_record()
    for key in ("sinks", "stride", "globals", "topk"):
        del old[key]  # a row written before these columns
    assert Case.from_record(old) == Case("naive", "local", window=8, seq_len=32)
    nan_row = {**sink.to_record(), "stride": float("nan"), "topk": float("nan")}  # NA cells read back from a table
    assert Case.from_record(nan_row) == sink


@pytest.mark.parametrize("pattern", [Pattern("sink", c, window=64, sinks=4) for c in (False, True)]
                         + [Pattern("dilated", c, window=64, stride=3) for c in (False, True)]
                         + [Pattern("bigbird", c, window=64, globals=4) for c in (False, True)], ids=lambda p: p.label)
def test_new_masks_are_built_without_n_by_n_integer_temporaries(pattern):
    from harness.bench.memory import track_allocations

    n = 1024
    alloc = track_allocations(lambda: pattern.mask(n), "cpu")
    assert alloc.result.dtype == torch.bool and alloc.result.shape == (n, n)
    assert alloc.net_bytes <= n * n + 64 * 1024  # the boolean result and O(N) position vectors
    assert alloc.peak_bytes <= 3 * n * n + 64 * 1024  # at most two boolean temporaries beside it (int64: 8x)


@pytest.mark.parametrize("pattern", PATTERNS + [Pattern("sink", True, window=2, sinks=3), Pattern("topk", True, topk=3),
                                                Pattern("document", True, doc_lens=(5, 4, 8))], ids=lambda p: p.label)
@pytest.mark.parametrize("q_len", [3, 17])
def test_reference_rows_are_those_rows_of_the_whole_output(pattern, q_len):
    g = torch.Generator().manual_seed(q_len)
    q = torch.randn(2, 4, q_len, 5, generator=g)
    k, v = (torch.randn(2, 2, 17, 5, generator=g) for _ in range(2))
    rows = torch.tensor([0, q_len // 2, q_len - 1]).unique()
    whole = reference(q, k, v, pattern)
    torch.testing.assert_close(reference(q, k, v, pattern, rows), whole[..., rows, :], rtol=1e-12, atol=1e-12)
