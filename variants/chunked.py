"""chunked: exact attention in O(N) memory, after Rabe & Staats, "Self-attention does not need
O(n^2) memory" (2021).

Queries are split into chunks of ``chunk_q`` and keys into chunks of ``chunk_k``. For each query
chunk, key chunks are visited in turn while a running row maximum, a running sum of exponentials and
an unnormalized output are merged (log-sum-exp merge), so the extra memory is O(chunk_q * chunk_k)
per head. Key chunks with no allowed pair (causal, local band) are skipped.

The backward pass recomputes each chunk's probabilities from the saved log-sum-exp instead of saving
them (the paper recomputes with checkpointing; a custom autograd.Function does the same with one
recompute per chunk pair), so it keeps the same O(chunk_q * chunk_k) bound. Softmax statistics are
accumulated in float32 whatever the input dtype.
"""

from __future__ import annotations

import math

import torch

from harness.core.patterns import Pattern
from harness.core.registry import Variant, register


def _chunk_mask(pattern: Pattern, q0: int, q1: int, k0: int, k1: int, device) -> torch.Tensor | None:
    """Allowed pairs for queries [q0, q1) x keys [k0, k1); None when all are allowed."""
    i = torch.arange(q0, q1, device=device)[:, None]
    j = torch.arange(k0, k1, device=device)[None, :]
    if pattern.kind == "global":
        if not pattern.causal or k1 - 1 <= q0:
            return None
        return j <= i
    diff = i - j
    return ((diff >= 0) & (diff <= pattern.window)) if pattern.causal else diff.abs() <= pattern.window


def _key_range(pattern: Pattern, q0: int, q1: int, n: int) -> tuple[int, int]:
    """Keys [lo, hi) that queries [q0, q1) may see."""
    if pattern.kind == "global":
        return 0, (q1 if pattern.causal else n)
    w = pattern.window
    return max(0, q0 - w), (q1 if pattern.causal else min(n, q1 - 1 + w + 1))


def _blocks(pattern: Pattern, n: int, cq: int, ck: int):
    """Yield (q0, q1, [(k0, k1), ...]) over query chunks and the key chunks they need."""
    for q0 in range(0, n, cq):
        q1 = min(n, q0 + cq)
        lo, hi = _key_range(pattern, q0, q1, n)
        yield q0, q1, [(k0, min(hi, k0 + ck)) for k0 in range(lo, hi, ck)]


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, pattern: Pattern, cq: int, ck: int):
        b, h, n, d = q.shape
        scale = 1.0 / math.sqrt(d)
        out = torch.empty_like(q)
        lse = torch.empty(b, h, n, dtype=torch.float32, device=q.device)  # (B, H, N)
        for q0, q1, kblocks in _blocks(pattern, n, cq, ck):
            qc = q[:, :, q0:q1] * scale  # (B, H, cq, D), pre-scaled once per query chunk
            acc = torch.zeros(b, h, q1 - q0, d, dtype=torch.float32, device=q.device)
            m = torch.full((b, h, q1 - q0, 1), float("-inf"), dtype=torch.float32, device=q.device)
            l = torch.zeros_like(m)
            for k0, k1 in kblocks:
                s = (qc @ k[:, :, k0:k1].transpose(-1, -2)).float()  # (B, H, cq, ck) scaled scores
                mask = _chunk_mask(pattern, q0, q1, k0, k1, q.device)
                if mask is not None:
                    s.masked_fill_(~mask, float("-inf"))
                m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
                # Rows with no allowed key yet have m_new = -inf; shift them by 0 so exp gives 0, not NaN.
                m_safe = m_new.nan_to_num(neginf=0.0) if mask is not None else m_new
                p = s.sub_(m_safe).exp_()  # (B, H, cq, ck) in place; masked entries are exactly 0
                alpha = (m - m_safe).exp_()  # rescales what was accumulated so far
                l = l.mul_(alpha).add_(p.sum(dim=-1, keepdim=True))
                acc = acc.mul_(alpha).add_(p.to(v.dtype) @ v[:, :, k0:k1])
                m = m_new
                del s, p
            out[:, :, q0:q1] = (acc / l).to(q.dtype)
            lse[:, :, q0:q1] = (m + torch.log(l)).squeeze(-1)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.pattern, ctx.cq, ctx.ck = pattern, cq, ck
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        pattern, cq, ck = ctx.pattern, ctx.cq, ctx.ck
        n, d = q.shape[-2], q.shape[-1]
        scale = 1.0 / math.sqrt(d)
        grad_out = grad_out.contiguous()
        dq = torch.zeros_like(q, dtype=torch.float32)
        dk = torch.zeros_like(k, dtype=torch.float32)
        dv = torch.zeros_like(v, dtype=torch.float32)
        delta = (grad_out.float() * out.float()).sum(dim=-1, keepdim=True)  # (B, H, N, 1)
        for q0, q1, kblocks in _blocks(pattern, n, cq, ck):
            qc, go = q[:, :, q0:q1], grad_out[:, :, q0:q1]
            lse_c, delta_c = lse[:, :, q0:q1, None], delta[:, :, q0:q1]
            for k0, k1 in kblocks:
                kc, vc = k[:, :, k0:k1], v[:, :, k0:k1]
                s = (qc @ kc.transpose(-1, -2)).float() * scale  # (B, H, cq, ck)
                mask = _chunk_mask(pattern, q0, q1, k0, k1, q.device)
                if mask is not None:
                    s.masked_fill_(~mask, float("-inf"))
                p = torch.exp(s - lse_c)  # recomputed probabilities
                dv[:, :, k0:k1] += p.transpose(-1, -2) @ go.float()
                dp = go.float() @ vc.float().transpose(-1, -2)  # (B, H, cq, ck)
                ds = p * (dp - delta_c) * scale
                dq[:, :, q0:q1] += ds @ kc.float()
                dk[:, :, k0:k1] += ds.transpose(-1, -2) @ qc.float()
                del s, p, dp, ds
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None


@register
class Chunked(Variant):
    name = "chunked"
    description = "Exact attention, query x key chunks with online softmax (Rabe & Staats), O(N) memory"
    patterns = ("global", "local")
    default_params = {"chunk_q": 512, "chunk_k": 1024}

    def forward(self, q, k, v, pattern: Pattern) -> torch.Tensor:
        return _ChunkedAttention.apply(q, k, v, pattern, int(self.params["chunk_q"]), int(self.params["chunk_k"]))
