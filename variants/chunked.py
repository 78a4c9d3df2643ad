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


def _chunk_mask(pattern: Pattern, p0: int, p1: int, k0: int, k1: int, doc, device) -> torch.Tensor | None:
    """Allowed pairs for query positions [p0, p1) x keys [k0, k1); None when all are allowed."""
    i = torch.arange(p0, p1, device=device)[:, None]  # absolute query positions
    j = torch.arange(k0, k1, device=device)[None, :]
    if pattern.kind == "global":
        if not pattern.causal or k1 - 1 <= p0:
            return None
        return j <= i
    if pattern.kind == "document":
        allowed = doc[None, k0:k1] == doc[p0:p1, None]
        return (allowed & (j <= i)) if pattern.causal else allowed
    allowed = j >= i - pattern.window
    allowed &= (j <= i) if pattern.causal else (j <= i + pattern.window)
    return allowed


def _key_range(pattern: Pattern, p0: int, p1: int, kv_len: int, bounds) -> tuple[int, int]:
    """Keys [lo, hi) that query positions [p0, p1) may see."""
    if pattern.kind == "global":
        return 0, (p1 if pattern.causal else kv_len)
    if pattern.kind == "document":
        lo = next(s for s, e in bounds if s <= p0 < e)
        hi = next(e for s, e in bounds if s <= p1 - 1 < e)
        return lo, (min(hi, p1) if pattern.causal else hi)
    w = pattern.window
    return max(0, p0 - w), (p1 if pattern.causal else min(kv_len, p1 - 1 + w + 1))


def _blocks(pattern: Pattern, q_len: int, kv_len: int, cq: int, ck: int):
    """Yield (q0, q1, p0, [(k0, k1), ...]): query rows [q0, q1) at positions p0.., and the key chunks they need."""
    offset = kv_len - q_len
    bounds = pattern.doc_bounds() if pattern.kind == "document" else None
    for q0 in range(0, q_len, cq):
        q1 = min(q_len, q0 + cq)
        lo, hi = _key_range(pattern, offset + q0, offset + q1, kv_len, bounds)
        yield q0, q1, offset + q0, [(k0, min(hi, k0 + ck)) for k0 in range(lo, hi, ck)]


class _ChunkedAttention(torch.autograd.Function):
    """q (B, H, Q, D), k and v (B, Hkv, K, D). A group of H / Hkv query heads is handled as one extra
    broadcast dimension: (B, Hkv, g, ...) against keys (B, Hkv, 1, ...), so k and v are never copied."""

    @staticmethod
    def forward(ctx, q, k, v, pattern: Pattern, cq: int, ck: int):
        b, h, q_len, d = q.shape
        h_kv, kv_len = k.shape[1], k.shape[2]
        g = h // h_kv
        scale = 1.0 / math.sqrt(d)
        doc = pattern.doc_ids(kv_len, q.device) if pattern.kind == "document" else None
        qg = q.view(b, h_kv, g, q_len, d)  # (B, Hkv, g, Q, D)
        out = torch.empty_like(q).view(b, h_kv, g, q_len, d)
        lse = torch.empty(b, h_kv, g, q_len, dtype=torch.float32, device=q.device)  # (B, Hkv, g, Q)
        for q0, q1, p0, kblocks in _blocks(pattern, q_len, kv_len, cq, ck):
            qc = qg[:, :, :, q0:q1] * scale  # (B, Hkv, g, cq, D), pre-scaled once per query chunk
            acc = torch.zeros(b, h_kv, g, q1 - q0, d, dtype=torch.float32, device=q.device)
            m = torch.full((b, h_kv, g, q1 - q0, 1), float("-inf"), dtype=torch.float32, device=q.device)
            l = torch.zeros_like(m)
            for k0, k1 in kblocks:
                s = (qc @ k[:, :, None, k0:k1].transpose(-1, -2)).float()  # (B, Hkv, g, cq, ck) scaled scores
                mask = _chunk_mask(pattern, p0, p0 + q1 - q0, k0, k1, doc, q.device)
                if mask is not None:
                    s.masked_fill_(~mask, float("-inf"))
                m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
                # Rows with no allowed key yet have m_new = -inf; shift them by 0 so exp gives 0, not NaN.
                m_safe = m_new.nan_to_num(neginf=0.0) if mask is not None else m_new
                p = s.sub_(m_safe).exp_()  # (B, Hkv, g, cq, ck) in place; masked entries are exactly 0
                alpha = (m - m_safe).exp_()  # rescales what was accumulated so far
                l = l.mul_(alpha).add_(p.sum(dim=-1, keepdim=True))
                acc = acc.mul_(alpha).add_(p.to(v.dtype) @ v[:, :, None, k0:k1])
                m = m_new
                del s, p
            out[:, :, :, q0:q1] = (acc / l).to(q.dtype)
            lse[:, :, :, q0:q1] = (m + torch.log(l)).squeeze(-1)
        out = out.view(b, h, q_len, d)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.pattern, ctx.cq, ctx.ck = pattern, cq, ck
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        pattern, cq, ck = ctx.pattern, ctx.cq, ctx.ck
        b, h, q_len, d = q.shape
        h_kv, kv_len = k.shape[1], k.shape[2]
        g = h // h_kv
        scale = 1.0 / math.sqrt(d)
        doc = pattern.doc_ids(kv_len, q.device) if pattern.kind == "document" else None
        qg = q.view(b, h_kv, g, q_len, d)
        go_all = grad_out.contiguous().view(b, h_kv, g, q_len, d)
        dq = torch.zeros(b, h_kv, g, q_len, d, dtype=torch.float32, device=q.device)
        dk = torch.zeros_like(k, dtype=torch.float32)  # (B, Hkv, K, D)
        dv = torch.zeros_like(v, dtype=torch.float32)
        delta = (go_all.float() * out.view(b, h_kv, g, q_len, d).float()).sum(dim=-1, keepdim=True)  # (B, Hkv, g, Q, 1)
        for q0, q1, p0, kblocks in _blocks(pattern, q_len, kv_len, cq, ck):
            qc, go = qg[:, :, :, q0:q1], go_all[:, :, :, q0:q1]
            lse_c, delta_c = lse[:, :, :, q0:q1, None], delta[:, :, :, q0:q1]
            for k0, k1 in kblocks:
                kc, vc = k[:, :, None, k0:k1], v[:, :, None, k0:k1]  # (B, Hkv, 1, ck, D)
                s = (qc @ kc.transpose(-1, -2)).float() * scale  # (B, Hkv, g, cq, ck)
                mask = _chunk_mask(pattern, p0, p0 + q1 - q0, k0, k1, doc, q.device)
                if mask is not None:
                    s.masked_fill_(~mask, float("-inf"))
                p = torch.exp(s - lse_c)  # recomputed probabilities
                dv[:, :, k0:k1] += (p.transpose(-1, -2) @ go.float()).sum(dim=2)  # summed over the group
                dp = go.float() @ vc.float().transpose(-1, -2)  # (B, Hkv, g, cq, ck)
                ds = p * (dp - delta_c) * scale
                dq[:, :, :, q0:q1] += ds @ kc.float()
                dk[:, :, k0:k1] += (ds.transpose(-1, -2) @ qc.float()).sum(dim=2)
                del s, p, dp, ds
        return dq.view(b, h, q_len, d).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None


@register
class Chunked(Variant):
    name = "chunked"
    description = "Exact attention, query x key chunks with online softmax (Rabe & Staats), O(N) memory"
    patterns = ("global", "local", "document")
    gqa = True
    decode = True
    default_params = {"chunk_q": 512, "chunk_k": 1024}

    def forward(self, q, k, v, pattern: Pattern) -> torch.Tensor:
        return _ChunkedAttention.apply(q, k, v, pattern, int(self.params["chunk_q"]), int(self.params["chunk_k"]))
