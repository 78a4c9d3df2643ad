"""The float64 references that define each pattern (see harness.core.patterns), input checks, and
the relative error every variant is held to. Written for clarity, not speed."""

from __future__ import annotations

import math

import torch

from harness.core.errors import InputError
from harness.core.patterns import Pattern, segment_means


def expand_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, Hkv, N, D) -> (B, heads, N, D): query head h uses key/value head h // (heads / Hkv)."""
    group = heads // x.shape[1]
    return x if group == 1 else x.repeat_interleave(group, dim=1)


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
              rows: torch.Tensor | None = None) -> torch.Tensor:
    """The float64 definition of ``pattern``. Returns a float64 tensor of q's shape.

    q is (B, H, q_len, D); k and v are (B, H_kv, kv_len, D) with H divisible by H_kv (grouped-query
    heads); queries sit at the end of the keys (see harness.core.patterns). topk keeps the keys its
    float64 scores rank highest (``torch.topk``'s order on ties).

    ``rows`` (a 1-D index of query rows): only those rows of the output, (B, H, len(rows), D), each
    exactly as in the whole output; the scores of the other rows are not computed (except for topk,
    whose mask is built from every row's scores).
    """
    check_qkv(q, k, v)
    q, k, v = (t.to(torch.float64) for t in (q, k, v))
    k, v = expand_kv(k, q.shape[1]), expand_kv(v, q.shape[1])  # (B, H, kv_len, D)
    q_len, kv_len, d = q.shape[-2], k.shape[-2], q.shape[-1]
    pattern.check_lengths(q_len, kv_len)
    if pattern.kind == "hierarchical":
        k = torch.cat([k, segment_means(k, pattern.segment)], dim=2)  # (B, H, kv_len+G, D)
        v = torch.cat([v, segment_means(v, pattern.segment)], dim=2)  # (B, H, kv_len+G, D)
    every_row = rows is None or pattern.kind == "topk"
    scores = ((q if every_row else q[..., rows, :]) @ k.transpose(-1, -2)) / math.sqrt(d)  # (B, H, q_len, M)
    allowed = pattern.mask(q_len, kv_len, q.device, scores=scores)  # (q_len, M); topk: (B, H, q_len, M)
    scores = scores.masked_fill(~(allowed if every_row else allowed[rows]), float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v  # (B, H, q_len, D)
    return out[..., rows, :] if rows is not None and every_row else out


def reference_with_grads(q, k, v, pattern: Pattern, grad_out: torch.Tensor):
    """Reference output and (dq, dk, dv) for the upstream gradient ``grad_out``, all float64."""
    leaves = [t.detach().to(torch.float64).requires_grad_(True) for t in (q, k, v)]
    out = reference(*leaves, pattern)
    out.backward(grad_out.to(torch.float64))
    return out.detach(), tuple(t.grad for t in leaves)


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Reject q, k, v that are not (B, H, q_len, D), (B, H_kv, kv_len, D) x 2 tensors of one dtype and device."""
    desc = f"q{tuple(q.shape)} {q.dtype}, k{tuple(k.shape)} {k.dtype}, v{tuple(v.shape)} {v.dtype}"
    hint = ("hint: pass q as (batch, heads, q_len, head_dim) and k, v as (batch, kv_heads, kv_len, head_dim), "
            "heads divisible by kv_heads, one dtype")
    if any(t.dim() != 4 for t in (q, k, v)):
        raise InputError(f"q, k, v must have rank 4, got {desc}; {hint}")
    if k.shape != v.shape:
        raise InputError(f"k and v shapes differ: {desc}; {hint}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise InputError(f"q and k differ in batch or head_dim: {desc}; {hint}")
    if k.shape[1] < 1 or q.shape[1] % k.shape[1]:
        raise InputError(f"heads={q.shape[1]} is not divisible by kv_heads={k.shape[1]}: {desc}; {hint}")
    if not (q.dtype == k.dtype == v.dtype):
        raise InputError(f"q, k, v dtypes differ: {desc}; {hint}")
    if not (q.device == k.device == v.device):
        raise InputError(f"q, k, v are on different devices ({q.device}, {k.device}, {v.device}); {hint}")
    if q.shape[2] < 1 or k.shape[2] < 1 or q.shape[3] < 1:
        raise InputError(f"q_len, kv_len and head_dim must be >= 1, got {desc}; {hint}")
    if q.shape[2] > k.shape[2]:
        raise InputError(f"q_len={q.shape[2]} is larger than kv_len={k.shape[2]}: {desc}; queries sit at the end of "
                         "the keys, hint: q_len <= kv_len (q_len = 1 for decoding)")


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64."""
    out, ref = out.detach().to(torch.float64), ref.detach().to(torch.float64)
    denom = torch.linalg.vector_norm(ref)
    return float(torch.linalg.vector_norm(out - ref) / (denom if denom > 0 else 1.0))
