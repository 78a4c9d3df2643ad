"""A llama-architecture GGUF model (SmolLM2) read with ``gguf`` and run forward in plain float32 torch.

Hyper-parameters come from the file's metadata. The forward is the Llama block: RMSNorm, rotary positions
on ADJACENT pairs ((x0, x1), (x2, x3), ...: llama.cpp's converter permutes the q/k weights for this
layout; Hugging Face's rotate-half layout on these weights reads a perplexity near 800), grouped-query
attention, a SwiGLU MLP; the output embedding is ``output.weight`` or, when absent, the tied input one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from harness.core.errors import InputError, WrongOutput
from harness.sources.tokenizer import build_tokenizer

LOGIT_ROWS = 256  # positions per chunk of the (N, vocab) logits: 50 MB for SmolLM2's 49152 tokens


@dataclass(frozen=True)
class LlamaConfig:
    layers: int
    dim: int
    ffn_dim: int
    heads: int
    kv_heads: int
    head_dim: int
    rope_dim: int  # the leading dimensions of each head that rotate
    rope_base: float
    rms_eps: float
    vocab: int
    context: int
    tied: bool  # no output.weight: logits use the token embedding

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(eq=False)
class GGUFModel:
    config: LlamaConfig
    weights: dict[str, torch.Tensor] = field(repr=False)
    tokenizer: object = field(repr=False)

    def forward(self, ids: torch.Tensor, capture: tuple[int, ...] = (),
                attention=None) -> tuple[float, dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """The mean negative log-likelihood of ``ids[1:]`` (each token given those before it) and the
        post-rotary (q, k, v) of each layer in ``capture``: q (1, H, N, D), k and v (1, H_kv, N, D).
        ``attention(q, k, v, layer) -> (1, H, N, D)`` replaces exact causal attention when given."""
        c, w = self.config, self.weights
        n = ids.numel()
        captured = {}
        with torch.inference_mode():
            cos, sin = rope_tables(n, c.rope_dim, c.rope_base)  # (N, rope_dim / 2) each
            x = w["token_embd.weight"][ids]  # (N, C)
            for i in range(c.layers):
                p = f"blk.{i}."
                h = rms_norm(x, w[p + "attn_norm.weight"], c.rms_eps)
                q = _heads(h @ w[p + "attn_q.weight"].T, c.heads)  # (1, H, N, D)
                k = _heads(h @ w[p + "attn_k.weight"].T, c.kv_heads)  # (1, H_kv, N, D)
                v = _heads(h @ w[p + "attn_v.weight"].T, c.kv_heads)  # (1, H_kv, N, D)
                q, k = rope_adjacent(q, cos, sin), rope_adjacent(k, cos, sin)
                if i in capture:
                    captured[i] = (q.clone(), k.clone(), v.clone())
                o = exact_attention(q, k, v, i) if attention is None else _checked(attention(q, k, v, i), q, i)
                o = o.transpose(1, 2).reshape(n, c.heads * c.head_dim)  # (N, H * D)
                x = x + o @ w[p + "attn_output.weight"].T
                h = rms_norm(x, w[p + "ffn_norm.weight"], c.rms_eps)
                gated = F.silu(h @ w[p + "ffn_gate.weight"].T) * (h @ w[p + "ffn_up.weight"].T)  # (N, F)
                x = x + gated @ w[p + "ffn_down.weight"].T
            x = rms_norm(x, w["output_norm.weight"], c.rms_eps)
            out = w["token_embd.weight"] if c.tied else w["output.weight"]  # (vocab, C)
            nll = 0.0
            for s in range(0, n - 1, LOGIT_ROWS):
                e = min(s + LOGIT_ROWS, n - 1)
                nll += F.cross_entropy(x[s:e] @ out.T, ids[s + 1:e + 1], reduction="sum").item()  # (rows, vocab)
        return nll / (n - 1), captured


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_tables(n: int, rope_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (N, rope_dim / 2) of position p times frequency base^(-2i / rope_dim)."""
    inv = base ** (-torch.arange(0, rope_dim, 2, dtype=torch.float64) / rope_dim)  # (rope_dim / 2,)
    angles = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]  # (N, rope_dim / 2)
    return angles.cos().float(), angles.sin().float()


def rope_adjacent(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions on adjacent pairs (x[2i], x[2i+1]) of the first 2 * cos.shape[-1] dims of x (B, H, N, D)."""
    r = 2 * cos.shape[-1]
    pairs = x[..., :r].unflatten(-1, (r // 2, 2))  # (B, H, N, r / 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]  # (B, H, N, r / 2) each
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)  # (B, H, N, r)
    return torch.cat((rotated, x[..., r:]), dim=-1)


def exact_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int | None = None) -> torch.Tensor:
    """Exact causal attention, k and v (B, H_kv, N, D) expanded to q's H heads (query head h reads kv head
    h // (H / H_kv), as Llama's repeat_kv does)."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, H, N, D)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(0, 1).unsqueeze(0)  # (N, H * D) -> (1, H, N, D)


def _checked(out, q: torch.Tensor, layer: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.shape != q.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise WrongOutput(f"attention at layer {layer} returned {got}, not q's shape {tuple(q.shape)}")
    return out.to(q.dtype)


def read_gguf(path: str) -> GGUFModel:
    """The model in the GGUF file at ``path``: config from its metadata, weights dequantized to float32,
    its tokenizer. A file that is not a llama-architecture GGUF is an InputError."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise InputError(f"model file {path!r} is not a readable GGUF file ({exc}); "
                         "hint: reinstall it (make quality-setup)") from None
    fields = reader.fields

    def meta(key, default=KeyError):
        f = fields.get(key)
        if f is None:
            if default is KeyError:
                raise InputError(f"model file {path!r} lacks metadata {key!r}; hint: use a llama-architecture GGUF")
            return default
        return f.contents()

    arch = meta("general.architecture")
    if arch != "llama":
        raise InputError(f"model file {path!r} has architecture {arch!r}; hint: use a 'llama' GGUF (SmolLM2)")
    names = {t.name for t in reader.tensors}
    heads, dim = meta("llama.attention.head_count"), meta("llama.embedding_length")
    head_dim = meta("llama.attention.key_length", dim // heads)
    tokens = meta("tokenizer.ggml.tokens")
    config = LlamaConfig(
        layers=meta("llama.block_count"), dim=dim, ffn_dim=meta("llama.feed_forward_length"), heads=heads,
        kv_heads=meta("llama.attention.head_count_kv", heads), head_dim=head_dim,
        rope_dim=meta("llama.rope.dimension_count", head_dim), rope_base=float(meta("llama.rope.freq_base", 10000.0)),
        rms_eps=float(meta("llama.attention.layer_norm_rms_epsilon")), vocab=meta("llama.vocab_size", len(tokens)),
        context=meta("llama.context_length"), tied="output.weight" not in names)
    weights = {t.name: torch.from_numpy(np.array(dequantize(t.data, t.tensor_type), dtype=np.float32))
               for t in reader.tensors}
    _check_shapes(path, config, weights)
    tokenizer = build_tokenizer(tokens, meta("tokenizer.ggml.merges"), meta("tokenizer.ggml.model"),
                                meta("tokenizer.ggml.pre", "default"), meta("tokenizer.ggml.token_type", None))
    return GGUFModel(config, weights, tokenizer)


def _check_shapes(path: str, c: LlamaConfig, weights: dict[str, torch.Tensor]) -> None:
    q, kv = c.heads * c.head_dim, c.kv_heads * c.head_dim
    want = {"token_embd.weight": (c.vocab, c.dim), "output_norm.weight": (c.dim,)}
    if not c.tied:
        want["output.weight"] = (c.vocab, c.dim)
    for i in range(c.layers):
        p = f"blk.{i}."
        want.update({p + "attn_norm.weight": (c.dim,), p + "attn_q.weight": (q, c.dim),
                     p + "attn_k.weight": (kv, c.dim), p + "attn_v.weight": (kv, c.dim),
                     p + "attn_output.weight": (c.dim, q), p + "ffn_norm.weight": (c.dim,),
                     p + "ffn_gate.weight": (c.ffn_dim, c.dim), p + "ffn_up.weight": (c.ffn_dim, c.dim),
                     p + "ffn_down.weight": (c.dim, c.ffn_dim)})
    for name, shape in want.items():
        got = tuple(weights[name].shape) if name in weights else None
        if got != shape:
            raise InputError(f"tensor {name!r} of model file {path!r} has shape {got}, not {shape} as its metadata "
                             "implies; hint: use a llama-architecture GGUF (SmolLM2)")
    if c.heads % c.kv_heads or c.rope_dim % 2 or c.rope_dim > c.head_dim:
        raise InputError(f"model file {path!r} has {c.heads} heads, {c.kv_heads} kv heads, rope dim {c.rope_dim} and "
                         f"head dim {c.head_dim}; hint: heads % kv_heads == 0 and an even rope dim <= head dim")
