"""chunked: exact attention in O(N) memory, after Rabe & Staats, "Self-attention does not need
O(n^2) memory" (2021).

Queries are split into chunks of ``chunk_q`` and keys into pieces; the partial results of a query
chunk against each key piece are merged by their log-sum-exp, so nothing of size N x N is held.
Two paths compute a (query chunk, key piece) block, chosen by ``kernel``:

* ``flash`` (``auto`` on CPU): torch's fused CPU flash-attention kernel (``variants._flash``) on
  the block, which never materializes the block's scores either (it tiles them internally), so the
  key pieces can be long: ``chunk_k="auto"`` takes the whole key range in one piece where every pair
  is allowed (global), splits causal rows at the diagonal (the diagonal block runs with the kernel's
  top-left causal flag, no mask tensor) and cuts masked patterns (local, document) into pieces of
  at most 1024 keys, each with its additive mask. ``chunk_q="auto"`` is every query for global
  (then global non-causal is one kernel call, the same call as SDPA's FLASH backend on CPU, and the
  kernel's own 256 x 512 tiles are the chunks) and 1024 for masked patterns (``flash_chunks``). Extra
  memory: O(chunk_q * D) per head for a block's output, O(chunk_q * piece) for a masked piece's mask,
  and the kernel's per-thread tiles.
* ``torch`` (``auto`` on every other device, CUDA included): plain matmuls with an online softmax
  over (chunk_q, chunk_k) score tiles, ``"auto"`` = 512 x 1024; extra memory O(chunk_q * chunk_k)
  per head. Key chunks with no allowed pair (causal, local band) are skipped.

The backward pass recomputes each block's probabilities from the saved log-sum-exp instead of saving
them (the paper recomputes with checkpointing; a custom autograd.Function does the same with one
recompute per block), so it keeps the same memory bound. Softmax statistics are accumulated in
float32 whatever the input dtype.
"""

from __future__ import annotations

import math

import torch

from harness.core.case import Case
from harness.core.errors import InputError
from harness.core.patterns import Pattern
from harness.core.registry import Variant, register
from variants._flash import additive, check_kernel, flash_bwd, flash_fwd, flash_kernel_reasons, merge, use_flash

MASK_PIECE = 1024  # keys per masked piece on the flash path (its additive mask is chunk_q x MASK_PIECE)


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
        # Contiguous whatever q's strides; _blocks' query chunks cover [0, Q), so every row is written.
        out = torch.empty(b, h_kv, g, q_len, d, dtype=q.dtype, device=q.device)  # (B, Hkv, g, Q, D)
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
            qs = qc * scale  # (B, Hkv, g, cq, D): the forward's pre-scaled queries, so p is recomputed alike
            lse_c, delta_c = lse[:, :, :, q0:q1, None], delta[:, :, :, q0:q1]
            for k0, k1 in kblocks:
                kc, vc = k[:, :, None, k0:k1], v[:, :, None, k0:k1]  # (B, Hkv, 1, ck, D)
                s = (qs @ kc.transpose(-1, -2)).float()  # (B, Hkv, g, cq, ck) scaled scores
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


def _heads(x: torch.Tensor, g: int) -> torch.Tensor:
    """(B, Hkv, n, D) -> (B, Hkv * g, n, D) for the flash kernel, which wants one key head per query head."""
    return x if g == 1 else x.repeat_interleave(g, dim=1)  # a copy of this piece only


def _flash_plan(pattern: Pattern, q_len: int, kv_len: int, cq: int, ck: int):
    """Yield (q0, q1, p0, pieces): query rows [q0, q1) at positions p0.., and their key pieces
    (k0, k1, kind), kind "full" (every pair allowed), "causal" (the diagonal block) or "mask"."""
    offset = kv_len - q_len
    bounds = pattern.doc_bounds() if pattern.kind == "document" else None
    for q0 in range(0, q_len, cq):
        q1 = min(q_len, q0 + cq)
        p0, p1 = offset + q0, offset + q1
        lo, hi = _key_range(pattern, p0, p1, kv_len, bounds)
        if pattern.kind == "global":
            full_hi = p0 if pattern.causal else hi  # causal: keys before the chunk are allowed for all rows
            pieces = [(k0, min(full_hi, k0 + ck), "full") for k0 in range(lo, full_hi, ck)]
            if pattern.causal:
                pieces.append((p0, p1, "causal"))  # query p0 + r sees key p0 + c iff c <= r: top-left causal
        else:
            step = min(ck, MASK_PIECE)
            pieces = [(k0, min(hi, k0 + step), "mask") for k0 in range(lo, hi, step)]
        yield q0, q1, p0, pieces


def _piece_mask(pattern: Pattern, p0: int, p1: int, k0: int, k1: int, kind: str, doc, dtype, device):
    """(additive mask or None, rows with no allowed key or None) of one "mask" piece."""
    if kind != "mask":
        return None, None
    allowed = _chunk_mask(pattern, p0, p1, k0, k1, doc, device)  # (cq, ck) bool
    if allowed is None or bool(allowed.all()):
        return None, None
    empty = ~allowed.any(dim=-1)  # (cq,)
    return additive(allowed, dtype), (empty if bool(empty.any()) else None)


class _FlashChunked(torch.autograd.Function):
    """The flash path: q (B, H, Q, D), k and v (B, Hkv, K, D); each (query chunk, key piece) block is
    one call of the fused kernel, merged into the chunk's output by log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v, pattern: Pattern, cq: int, ck: int):
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))  # the kernel's one demand
        b, h, q_len, d = q.shape
        kv_len = k.shape[2]
        g = h // k.shape[1]
        scale = 1.0 / math.sqrt(d)
        doc = pattern.doc_ids(kv_len, q.device) if pattern.kind == "document" else None
        plan = list(_flash_plan(pattern, q_len, kv_len, cq, ck))
        out = lse = None  # one block: the kernel's own output; more: written chunk by chunk below
        if len(plan) > 1 or len(plan[0][3]) > 1:
            # _flash_plan's query chunks cover [0, Q), so every row of out and lse is written below.
            out = torch.empty(b, h, q_len, d, dtype=q.dtype, device=q.device)  # (B, H, Q, D)
            lse = torch.empty(b, h, q_len, dtype=torch.float32, device=q.device)  # (B, H, Q)
        for q0, q1, p0, pieces in plan:
            qc = q[:, :, q0:q1]  # (B, H, cq, D)
            acc = acc_lse = None
            for k0, k1, kind in pieces:
                mask, empty = _piece_mask(pattern, p0, p0 + q1 - q0, k0, k1, kind, doc, q.dtype, q.device)
                o, l = flash_fwd(qc, _heads(k[:, :, k0:k1], g), _heads(v[:, :, k0:k1], g), scale, mask,
                                 kind == "causal")  # (B, H, cq, D), (B, H, cq)
                if empty is not None:  # the kernel gives such rows lse 0: they hold no key of this piece
                    l = l.masked_fill(empty, float("-inf"))
                acc, acc_lse = (o, l) if len(pieces) == 1 else merge(acc, acc_lse, o, l)
            if out is None:
                out, lse = acc, acc_lse
            else:
                out[:, :, q0:q1] = acc
                lse[:, :, q0:q1] = acc_lse
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
        go_all = grad_out.contiguous()  # (B, H, Q, D)
        dq = torch.zeros(b, h, q_len, d, dtype=torch.float32, device=q.device)
        dk = torch.zeros(b, h_kv, kv_len, d, dtype=torch.float32, device=q.device)
        dv = torch.zeros_like(dk)
        for q0, q1, p0, pieces in _flash_plan(pattern, q_len, kv_len, cq, ck):
            qc, go, oc, lc = q[:, :, q0:q1], go_all[:, :, q0:q1], out[:, :, q0:q1], lse[:, :, q0:q1]
            for k0, k1, kind in pieces:
                mask, _ = _piece_mask(pattern, p0, p0 + q1 - q0, k0, k1, kind, doc, q.dtype, q.device)
                dqc, dkc, dvc = flash_bwd(go, qc, _heads(k[:, :, k0:k1], g), _heads(v[:, :, k0:k1], g), oc, lc,
                                          scale, mask, kind == "causal")
                dq[:, :, q0:q1] += dqc
                dk[:, :, k0:k1] += dkc.view(b, h_kv, g, k1 - k0, d).sum(dim=2)  # (B, Hkv, piece, D)
                dv[:, :, k0:k1] += dvc.view(b, h_kv, g, k1 - k0, d).sum(dim=2)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None


TORCH_CHUNKS = (512, 1024)  # the torch path's "auto" (chunk_q, chunk_k): one score tile per head


def flash_chunks(pattern: Pattern, q_len: int, kv_len: int) -> tuple[int, int]:
    """The flash path's "auto" (chunk_q, chunk_k): every key in one piece; for global (whose pieces need
    no mask tensor) every query in one chunk too, 1024 queries for masked patterns (local, document).

    One global chunk is one kernel call whose output is returned uncopied: the kernel tiles queries
    and keys itself (256 x 512 per thread on CPU, with an online softmax), so splitting the queries
    further would add copies and calls but save no memory."""
    return (q_len if pattern.kind == "global" else 1024), kv_len


@register
class Chunked(Variant):
    name = "chunked"
    description = ("Exact attention, query chunks x key pieces merged by log-sum-exp (Rabe & Staats), O(N) "
                   "memory; fused CPU flash kernel per block")
    patterns = ("global", "local", "document")
    gqa = True
    decode = True
    default_params = {"chunk_q": "auto", "chunk_k": "auto", "kernel": "auto"}

    @classmethod
    def check_param(cls, key, value) -> None:
        if key in ("chunk_q", "chunk_k"):
            if value != "auto" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise InputError(f"variant 'chunked': parameter {key} must be an integer >= 1 or 'auto', got "
                                 f"{value!r} ({type(value).__name__}); hint: {key} = 'auto' (chosen from the shape)")
            return
        if key == "kernel":
            check_kernel(cls.name, value)
        super().check_param(key, value)

    def not_supported_reasons(self, case: Case) -> list[str]:
        return super().not_supported_reasons(case) + flash_kernel_reasons(case.device, self.params["kernel"])

    def chunks(self, flash: bool, pattern: Pattern, q_len: int, kv_len: int) -> tuple[int, int]:
        """(chunk_q, chunk_k) for this path: the parameters, or the path's choice where they are 'auto'."""
        auto_q, auto_k = flash_chunks(pattern, q_len, kv_len) if flash else TORCH_CHUNKS
        cq, ck = self.params["chunk_q"], self.params["chunk_k"]
        return (auto_q if cq == "auto" else cq), (auto_k if ck == "auto" else ck)

    def forward(self, q, k, v, pattern: Pattern) -> torch.Tensor:
        flash = use_flash(q.device, self.params["kernel"])
        cq, ck = self.chunks(flash, pattern, q.shape[2], k.shape[2])
        return (_FlashChunked if flash else _ChunkedAttention).apply(q, k, v, pattern, cq, ck)
