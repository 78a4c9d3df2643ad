"""Attention patterns: *what* is computed, and the float64 references that define them.

For query position i and key position j (0-based, sequence length N), with scores scaled by
1/sqrt(head_dim):

* ``global``:        every j (causal: j <= i).
* ``local(w)``:      |i - j| <= w (causal: 0 <= i - j <= w).
* ``hierarchical(s)``: positions split into segments of length s (the last may be shorter). Query i
  in segment g attends, in ONE softmax, to every key of its own segment (causal: only j <= i) and to
  one summary per other segment g' (causal: only g' < g) whose key and value are the means of the
  keys and values of g'.

The references below are written for clarity, not speed; every variant is held to them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

PATTERN_KINDS = ("global", "local", "hierarchical")


class InputError(ValueError):
    """Bad user input (shapes, dtypes, pattern parameters). The message names the value and a hint."""


@dataclass(frozen=True)
class Pattern:
    """What is computed. ``window`` is used by ``local`` only, ``segment`` by ``hierarchical`` only."""

    kind: str = "global"
    causal: bool = False
    window: int | None = None
    segment: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in PATTERN_KINDS:
            raise InputError(f"unknown pattern {self.kind!r}; valid patterns: {', '.join(PATTERN_KINDS)}")
        if self.kind == "local":
            if self.window is None or int(self.window) < 1:
                raise InputError(f"window must be an integer >= 1 for the local pattern, got {self.window!r}; "
                                 "hint: pass e.g. window=128")
        elif self.window is not None:
            object.__setattr__(self, "window", None)
        if self.kind == "hierarchical":
            if self.segment is None or int(self.segment) < 1:
                raise InputError(f"segment must be an integer >= 1 for the hierarchical pattern, got "
                                 f"{self.segment!r}; hint: pass e.g. segment=64 (about sqrt(N))")
        elif self.segment is not None:
            object.__setattr__(self, "segment", None)

    @property
    def label(self) -> str:
        extra = {"local": f"(w={self.window})", "hierarchical": f"(s={self.segment})"}.get(self.kind, "")
        return f"{self.kind}{extra}{'-causal' if self.causal else ''}"

    # ---- definition -------------------------------------------------------------------------
    def num_segments(self, n: int) -> int:
        assert self.segment is not None
        return math.ceil(n / self.segment)

    def mask(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Boolean (N, M) matrix of allowed (query, key) pairs.

        M = N for global and local. For hierarchical, M = N + G: columns N.. are the G segment
        summaries, in segment order.
        """
        i = torch.arange(n, device=device)[:, None]  # (N, 1) query positions
        j = torch.arange(n, device=device)[None, :]  # (1, N) key positions
        if self.kind == "global":
            return (j <= i) if self.causal else torch.ones(n, n, dtype=torch.bool, device=device)
        if self.kind == "local":
            d = i - j
            return ((d >= 0) & (d <= self.window)) if self.causal else (d.abs() <= self.window)
        s = self.segment
        g_q = i // s  # (N, 1) segment of each query
        own = (j // s) == g_q
        if self.causal:
            own = own & (j <= i)
        g = torch.arange(self.num_segments(n), device=device)[None, :]  # (1, G) summary index
        summary = (g < g_q) if self.causal else (g != g_q)
        return torch.cat([own, summary], dim=1)

    def pairs(self, n: int) -> int:
        """Number of allowed (query, key) pairs, summaries included; O(N), no N x N tensor."""
        i = np.arange(n, dtype=np.int64)
        if self.kind == "global":
            return int(n * (n + 1) // 2 if self.causal else n * n)
        if self.kind == "local":
            w = self.window
            if self.causal:
                return int((np.minimum(i, w) + 1).sum())
            return int((np.minimum(i + w, n - 1) - np.maximum(i - w, 0) + 1).sum())
        s = self.segment
        n_seg = self.num_segments(n)
        g = i // s
        if self.causal:
            return int(((i - g * s + 1) + g).sum())
        seg_len = np.minimum((g + 1) * s, n) - g * s
        return int((seg_len + n_seg - 1).sum())


def segment_means(x: torch.Tensor, segment: int) -> torch.Tensor:
    """(B, H, N, D) -> (B, H, G, D): the mean of each segment of ``segment`` positions (last may be shorter)."""
    b, h, n, d = x.shape
    n_seg = math.ceil(n / segment)
    pad = n_seg * segment - n
    xp = torch.nn.functional.pad(x, (0, 0, 0, pad))  # (B, H, G*s, D), zero padded
    sums = xp.reshape(b, h, n_seg, segment, d).sum(dim=3)  # (B, H, G, D)
    counts = torch.full((n_seg,), float(segment), dtype=x.dtype, device=x.device)
    counts[-1] = n - (n_seg - 1) * segment
    return sums / counts[:, None]


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
