"""The float64 references that define each pattern (see harness.core.patterns), input checks, and
the relative error every variant is held to. Written for clarity, not speed."""

from __future__ import annotations

import math

import torch

from harness.core.errors import InputError
from harness.core.patterns import Pattern, segment_means


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """The float64 definition of ``pattern``. Returns a float64 tensor of q's shape."""
    check_qkv(q, k, v)
    q, k, v = (t.to(torch.float64) for t in (q, k, v))
    n, d = q.shape[-2], q.shape[-1]
    if pattern.kind == "hierarchical":
        k = torch.cat([k, segment_means(k, pattern.segment)], dim=2)  # (B, H, N+G, D)
        v = torch.cat([v, segment_means(v, pattern.segment)], dim=2)  # (B, H, N+G, D)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)  # (B, H, N, M)
    scores = scores.masked_fill(~pattern.mask(n, q.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (B, H, N, D)


def reference_with_grads(q, k, v, pattern: Pattern, grad_out: torch.Tensor):
    """Reference output and (dq, dk, dv) for the upstream gradient ``grad_out``, all float64."""
    leaves = [t.detach().to(torch.float64).requires_grad_(True) for t in (q, k, v)]
    out = reference(*leaves, pattern)
    out.backward(grad_out.to(torch.float64))
    return out.detach(), tuple(t.grad for t in leaves)


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Reject q, k, v that are not same-shape, same-dtype, same-device (B, H, N, D) tensors."""
    desc = f"q{tuple(q.shape)} {q.dtype}, k{tuple(k.shape)} {k.dtype}, v{tuple(v.shape)} {v.dtype}"
    hint = "hint: pass q, k, v as (batch, heads, seq_len, head_dim) tensors of one shape and dtype"
    if any(t.dim() != 4 for t in (q, k, v)):
        raise InputError(f"q, k, v must have rank 4, got {desc}; {hint}")
    if not (q.shape == k.shape == v.shape):
        raise InputError(f"q, k, v shapes differ: {desc}; {hint}")
    if not (q.dtype == k.dtype == v.dtype):
        raise InputError(f"q, k, v dtypes differ: {desc}; {hint}")
    if not (q.device == k.device == v.device):
        raise InputError(f"q, k, v are on different devices ({q.device}, {k.device}, {v.device}); {hint}")
    if q.shape[2] < 1 or q.shape[3] < 1:
        raise InputError(f"seq_len and head_dim must be >= 1, got {desc}; {hint}")


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64."""
    out, ref = out.detach().to(torch.float64), ref.detach().to(torch.float64)
    denom = torch.linalg.vector_norm(ref)
    return float(torch.linalg.vector_norm(out - ref) / (denom if denom > 0 else 1.0))
