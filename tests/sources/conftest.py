"""A tiny llama-architecture GGUF model, written with gguf's own writer: 2 layers, 16-dim embeddings,
2 query heads and 1 key/value head of dimension 8, a byte-level BPE vocabulary of 267 tokens, F32 weights."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

TINY = dict(layers=2, dim=16, ffn_dim=32, heads=2, kv_heads=1, head_dim=8, rope_dim=8, rope_base=10000.0,
            rms_eps=1e-5, context=128)
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "a t"]
TEXT = ("The assert statement is a convenient way to insert debugging assertions into a program. "
        "In 2024 there were 365 days; the return statement leaves the current function call. ") * 4


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tiny_vocab() -> tuple[list[str], list[int]]:
    tokens = ["<|endoftext|>"] + byte_alphabet() + [m.replace(" ", "") for m in MERGES]
    return tokens, [3] + [1] * (len(tokens) - 1)


def tiny_weights(tied: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = TINY
    vocab = len(tiny_vocab()[0])

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.4).astype(np.float32)

    w = {"token_embd.weight": rand(vocab, t["dim"]), "output_norm.weight": 1 + rand(t["dim"]) * 0.1}
    if not tied:
        w["output.weight"] = rand(vocab, t["dim"])
    q, kv = t["heads"] * t["head_dim"], t["kv_heads"] * t["head_dim"]
    for i in range(t["layers"]):
        p = f"blk.{i}."
        w.update({p + "attn_norm.weight": 1 + rand(t["dim"]) * 0.1, p + "attn_q.weight": rand(q, t["dim"]),
                  p + "attn_k.weight": rand(kv, t["dim"]), p + "attn_v.weight": rand(kv, t["dim"]),
                  p + "attn_output.weight": rand(t["dim"], q), p + "ffn_norm.weight": 1 + rand(t["dim"]) * 0.1,
                  p + "ffn_gate.weight": rand(t["ffn_dim"], t["dim"]),
                  p + "ffn_up.weight": rand(t["ffn_dim"], t["dim"]),
                  p + "ffn_down.weight": rand(t["dim"], t["ffn_dim"])})
    return w


def write_tiny_gguf(path, tied: bool = True, arch: str = "llama") -> dict[str, np.ndarray]:
    gguf = pytest.importorskip("gguf")
    t = TINY
    tokens, types = tiny_vocab()
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(t["layers"])
    writer.add_context_length(t["context"])
    writer.add_embedding_length(t["dim"])
    writer.add_feed_forward_length(t["ffn_dim"])
    writer.add_head_count(t["heads"])
    writer.add_head_count_kv(t["kv_heads"])
    writer.add_rope_dimension_count(t["rope_dim"])
    writer.add_rope_freq_base(t["rope_base"])
    writer.add_layer_norm_rms_eps(t["rms_eps"])
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(MERGES)
    weights = tiny_weights(tied)
    for name, array in weights.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights


@pytest.fixture
def tiny(tmp_path):
    """A tiny tied-embedding llama GGUF file: its ``path``, ``weights`` (numpy, by GGUF name), hyper-parameters
    (``config``), a ``text`` to read, and ``write(path, tied=True, arch="llama")`` for variants."""
    pytest.importorskip("tokenizers")
    path = tmp_path / "tiny.gguf"
    return SimpleNamespace(path=path, weights=write_tiny_gguf(path), config=TINY, text=TEXT, write=write_tiny_gguf)


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """XDG_CACHE_HOME set to a fresh folder: the sources cache lives at <it>/attnbench/sources."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home / "attnbench" / "sources"
