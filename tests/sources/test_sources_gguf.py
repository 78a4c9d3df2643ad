"""The GGUF reader, tokenizer, forward, capture and cache, on a tiny model the tests write."""

from __future__ import annotations

import math

import pytest
import torch

from harness.core.errors import InputError, WrongOutput

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from harness.sources import smollm2  # noqa: E402
from harness.sources.gguf_model import read_gguf  # noqa: E402

N = 40


def load(tiny, path=None, **kw):
    kw = {"text": tiny.text, "text_name": "tiny text", "name": "tiny", "max_perplexity": None, **kw}
    return smollm2.load_model_source(kw.pop("layers", None), kw.pop("max_len", N), path=path or tiny.path, **kw)


@pytest.fixture(autouse=True)
def fresh_memo():
    memo = smollm2._model  # the memoized loader itself: a test may monkeypatch the name
    memo.cache_clear()
    yield
    memo.cache_clear()


def test_reader_reads_hyper_parameters_from_metadata(tiny):
    weights, TINY = tiny.weights, tiny.config
    model = read_gguf(str(tiny.path))
    c = model.config
    assert (c.layers, c.dim, c.ffn_dim, c.heads, c.kv_heads, c.head_dim, c.rope_dim, c.context) == (
        TINY["layers"], TINY["dim"], TINY["ffn_dim"], TINY["heads"], TINY["kv_heads"], TINY["head_dim"],
        TINY["rope_dim"], TINY["context"])
    assert c.rope_base == TINY["rope_base"] and c.rms_eps == pytest.approx(TINY["rms_eps"])
    assert c.tied and c.vocab == weights["token_embd.weight"].shape[0]
    assert torch.equal(model.weights["blk.1.attn_k.weight"], torch.from_numpy(weights["blk.1.attn_k.weight"]))


def test_tokenizer_uses_the_files_merges_and_splits_digits(tiny):
    tokenizer = read_gguf(str(tiny.path)).tokenizer
    enc = tokenizer.encode(" the 2024", add_special_tokens=False)
    assert enc.tokens == ["Ġthe", "Ġ", "2", "0", "2", "4"]
    assert tokenizer.decode(tokenizer.encode(tiny.text[:200], add_special_tokens=False).ids) == tiny.text[:200]


def independent_rope(x, base):
    """Adjacent-pair rotary positions by complex multiplication: (x0 + i x1) * e^(i p theta_j)."""
    b, h, n, d = x.shape
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (D / 2,)
    phase = torch.polar(torch.ones(n, d // 2, dtype=torch.float64), torch.arange(n)[:, None] * theta)  # (N, D / 2)
    z = torch.view_as_complex(x.double().reshape(b, h, n, d // 2, 2).contiguous())  # (B, H, N, D / 2)
    return torch.view_as_real(z * phase).reshape(b, h, n, d).float()


def test_capture_shapes_and_post_rotary_q_k(tiny, cache_home):
    path, w, TINY = tiny.path, tiny.weights, tiny.config
    source = load(tiny)
    assert (source.kind, source.layers, source.max_len) == ("tiny", (0, 1), N)
    assert (source.heads, source.kv_heads, source.head_dim) == (2, 1, 8)
    q, k, v = source.qkv(0, N, torch.float32)
    assert q.shape == (1, 2, N, 8) and k.shape == v.shape == (1, 1, N, 8)

    model = read_gguf(str(path))
    ids = smollm2._tokens(model, tiny.text, N)
    x = torch.from_numpy(w["token_embd.weight"])[ids]  # (N, C)
    norm = torch.from_numpy(w["blk.0.attn_norm.weight"])
    h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + TINY["rms_eps"]) * norm  # (N, C)
    pre_k = (h @ torch.from_numpy(w["blk.0.attn_k.weight"]).T).reshape(1, N, 1, 8).transpose(1, 2)  # (1, 1, N, 8)
    pre_q = (h @ torch.from_numpy(w["blk.0.attn_q.weight"]).T).reshape(1, N, 2, 8).transpose(1, 2)  # (1, 2, N, 8)
    torch.testing.assert_close(k, independent_rope(pre_k, TINY["rope_base"]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q, independent_rope(pre_q, TINY["rope_base"]), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(k[:, :, 1:], pre_k[:, :, 1:])  # rotated: not the raw projection


def test_qkv_slices_casts_and_batches(tiny, cache_home):
    source = load(tiny)
    q, k, v = source.qkv(1, 10, torch.bfloat16, batch=3)
    full = source.qkv(1, N, torch.float32)
    assert q.shape == (3, 2, 10, 8) and k.shape == (3, 1, 10, 8) and q.dtype == torch.bfloat16
    torch.testing.assert_close(q[2].float(), full[0][0, :, :10], rtol=1e-2, atol=1e-2)
    for bad in [dict(layer=5, n=4), dict(layer=0, n=N + 1), dict(layer=0, n=0)]:
        with pytest.raises(InputError) as exc:
            source.qkv(dtype=torch.float32, **bad)
        assert "\n" not in str(exc.value) and "hint:" in str(exc.value)


def causal_by_hand(q, k, v, layer):
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)  # (1, H, N, D)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (1, H, N, N)
    n = q.shape[2]
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1) @ v


def test_perplexity_with_pluggable_attention(tiny, cache_home):
    source = load(tiny)
    exact = source.perplexity()
    assert 1 < exact < 1e4
    assert source.perplexity(attention=causal_by_hand) == pytest.approx(exact, rel=1e-5)
    seen = []

    def local(q, k, v, layer):  # each position attends to itself only
        seen.append((layer, q.shape, k.shape))
        return v.repeat_interleave(q.shape[1] // k.shape[1], 1)

    assert source.perplexity(attention=local) != pytest.approx(exact, rel=1e-3)
    assert seen == [(0, (1, 2, N, 8), (1, 1, N, 8)), (1, (1, 2, N, 8), (1, 1, N, 8))]
    assert source.perplexity(attention=causal_by_hand, n=20) == pytest.approx(source.perplexity(n=20), rel=1e-5)
    with pytest.raises(WrongOutput):
        source.perplexity(attention=lambda q, k, v, layer: q[..., :4])
    with pytest.raises(InputError):
        source.perplexity(n=N + 1)


def test_cache_is_written_and_reread_without_the_model(tiny, cache_home, monkeypatch):
    first = load(tiny)
    files = sorted(p.name for p in cache_home.rglob("*") if p.is_file())
    assert files == ["layer000.pt", "layer001.pt", "meta.json"]
    meta = first.meta()
    assert meta["cache_hit"] is False and meta["tokens"] == N and meta["cache_path"].startswith(str(cache_home))
    assert meta["model_sha256"].startswith(first.id.split(":")[1]) and len(meta["text_sha256"]) == 64

    def no_model(*_):
        raise AssertionError("the model was loaded on a cache hit")

    monkeypatch.setattr(smollm2, "_model", no_model)
    again = load(tiny)
    assert again.meta()["cache_hit"] is True and again.perplexity() == first.perplexity()
    for a, b in zip(again.qkv(1, N, torch.float32), first.qkv(1, N, torch.float32)):
        assert torch.equal(a, b)


def test_an_interrupted_write_leaves_no_file(tiny, cache_home, monkeypatch):
    from harness.sources import cache

    def half_written(obj, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.torch, "save", half_written)
    with pytest.raises(KeyboardInterrupt):
        load(tiny)
    assert [p for p in cache_home.rglob("*") if p.is_file()] == []


def test_perplexity_guard_refuses_a_broken_forward_and_caches_nothing(tiny, cache_home):
    with pytest.raises(InputError, match=r"perplexity .* is above 1: its forward is broken") as exc:
        load(tiny, max_perplexity=1.0)
    assert "\n" not in str(exc.value)
    assert [p for p in cache_home.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("kw, match", [
    (dict(layers=(2,)), r"layers \(2,\) of tiny are not within 0\.\.1"),
    (dict(layers=()), r"layers \(\) of tiny"),
    (dict(max_len=129), r"max_len 129 is above the 128 positions"),
    (dict(max_len=1), r"max_len 1 is not an integer of at least 2"),
    (dict(text="too short"), r"max_len 40 is more tokens than the text holds"),
])
def test_bad_requests_are_one_line_input_errors(tiny, cache_home, kw, match):
    with pytest.raises(InputError, match=match) as exc:
        load(tiny, **kw)
    assert "\n" not in str(exc.value) and "hint:" in str(exc.value)


def test_untied_output_and_wrong_architecture(tmp_path, cache_home, tiny):
    tiny.write(tmp_path / "untied.gguf", tied=False)
    assert not read_gguf(str(tmp_path / "untied.gguf")).config.tied
    assert load(tiny, tmp_path / "untied.gguf").perplexity() > 1
    tiny.write(tmp_path / "other.gguf", arch="gpt2")
    with pytest.raises(InputError, match="architecture 'gpt2'"):
        read_gguf(str(tmp_path / "other.gguf"))


def test_exact_attention_matches_by_hand():
    from harness.sources.gguf_model import exact_attention

    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 12, 8, generator=g)  # (B, H, N, D)
    k, v = torch.randn(1, 2, 12, 8, generator=g), torch.randn(1, 2, 12, 8, generator=g)  # (B, H_kv, N, D)
    torch.testing.assert_close(exact_attention(q, k, v), causal_by_hand(q, k, v, 0), rtol=1e-5, atol=1e-5)
