"""local: sliding-window attention in blocks of queries, O(N * w) time and memory.

Each block of ``block`` queries sees one window of keys: from w before its first query to w after
its last (causal: to its last query), clipped to the keys; no N x N tensor is ever built. Queries
sit at the end of the keys (a decode step's window is aligned to the end of the cache). Two paths,
chosen by ``kernel``:

* ``flash`` (``auto`` on CPU): one call of torch's fused CPU flash-attention kernel
  (``variants._flash``) per query block on its key window, with the band as an additive mask. The
  band is the same for every block: one (block, block + 2w) mask is built per shape (``constants``)
  and each block passes a view of it (fewer rows for the last block, fewer columns where the window
  is clipped). Extra memory: the block's output, O(block * D) per head. The backward is a custom
  autograd.Function calling the kernel's backward per block with the saved row log-sum-exp.
* ``torch`` (``auto`` on every other device, CUDA included): keys padded by w on each side and
  viewed (no copy) as one overlapping window of block + 2w keys per block of queries, so the whole
  pattern is one batched matmul over a (blocks, block, block + 2w) score tensor per head; autograd
  differentiates it.

A group of query heads shares its key/value head: a broadcast dimension on the torch path, a copy of
the block's window on the flash path (the kernel wants one key head per query head).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.core.case import Case
from harness.core.patterns import Pattern
from harness.core.registry import Variant, register
from variants._flash import (
    additive,
    check_kernel,
    flash_bwd,
    flash_fwd,
    flash_kernel_reasons,
    row_blocks,
    slots,
    use_flash,
)

GROUP_ROWS = 2048  # flash path: query rows of full-window blocks per kernel call (blocks as its heads)


def _geometry(q_len: int, window: int, causal: bool, block: int) -> tuple[int, int, int, int]:
    """(block length, blocks, keys left of a block, keys right of it)."""
    blk = min(block, q_len)
    return blk, math.ceil(q_len / blk), window, (0 if causal else window)


def _blocked(pattern: Pattern, q_len: int, kv_len: int, block: int, device) -> torch.Tensor:
    """(nb, blk, span) boolean: the window slots a query may not use (outside the band or the keys)."""
    blk, nb, left, right = _geometry(q_len, pattern.window, pattern.causal, block)
    span = blk + left + right
    offset = kv_len - q_len  # position of query 0
    # Query r of block i is position offset + i*blk + r; slot c of its window is key offset + i*blk - left + c.
    r = torch.arange(blk, device=device)[:, None]
    c = torch.arange(span, device=device)[None, :]
    lo = r + left - pattern.window  # (blk, 1): first allowed slot
    hi = r + left if pattern.causal else r + left + pattern.window  # (blk, 1): last allowed slot
    band = (c >= lo) & (c <= hi)  # (blk, span)
    key_pos = offset + torch.arange(nb, device=device)[:, None, None] * blk - left + c  # (nb, 1, span)
    return ~(band & (key_pos >= 0) & (key_pos < kv_len))  # (nb, blk, span)


def _band(pattern: Pattern, blk: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(blk, blk + w + right) additive mask of a block's window: query r of the block (position P0 + r)
    may see slot c (key P0 - w + c) iff r <= c <= r + w + right, right = 0 (causal) or w."""
    w = pattern.window
    right = 0 if pattern.causal else w
    r = torch.arange(blk, device=device)[:, None]  # (blk, 1)
    c = torch.arange(blk + w + right, device=device)[None, :]  # (1, span)
    return additive((c >= r) & (c <= r + w + right), dtype)  # (blk, span)


def _windows(pattern: Pattern, q_len: int, kv_len: int, blk: int):
    """Yield (i0, i1, lo, hi, c0): query rows [i0, i1), their keys [lo, hi), and the band column of key lo."""
    offset, w = kv_len - q_len, pattern.window
    right = 0 if pattern.causal else w
    for i0 in range(0, q_len, blk):
        i1 = min(q_len, i0 + blk)
        start = offset + i0 - w  # the window's first key before clipping
        lo, hi = max(0, start), min(kv_len, offset + i1 + right)
        yield i0, i1, lo, hi, lo - start


def _heads(x: torch.Tensor, g: int) -> torch.Tensor:
    """(B, Hkv, n, D) -> (B, Hkv * g, n, D): one key head per query head (a copy of this window only)."""
    return x if g == 1 else x.repeat_interleave(g, dim=1)


def _runs(blocks: list, blk: int, span: int, per_call: int):
    """Split _windows' blocks into calls: ("run", first block, count) for consecutive blocks with a
    full window of ``span`` keys (at most ``per_call`` of them), ("one", block) for the others."""
    out, run = [], []
    for blk_ in blocks:
        i0, i1, lo, hi, c0 = blk_
        if i1 - i0 == blk and c0 == 0 and hi - lo == span and len(run) < per_call:
            run.append(blk_)
            continue
        if run:
            out.append(("run", run[0], len(run)))
            run = []
        if i1 - i0 == blk and c0 == 0 and hi - lo == span:
            run.append(blk_)
        else:
            out.append(("one", blk_, 1))
    if run:
        out.append(("run", run[0], len(run)))
    return out


class _FlashLocal(torch.autograd.Function):
    """The flash path: q (B, H, Q, D), k and v (B, Hkv, K, D), band (blk, span) from ``_band``.

    Consecutive blocks with an unclipped window go to the kernel together, as its head dimension:
    queries (nh, blocks, blk, D) and overlapping key windows (nh, blocks, span, D), both views; the
    band broadcasts over them. Blocks at the ends (clipped windows, the shorter last block) are one
    call each, on all heads, with a view of the band."""

    @staticmethod
    def forward(ctx, q, k, v, pattern: Pattern, blk: int, band: torch.Tensor):
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))  # the kernel's one demand
        b, h, q_len, d = q.shape
        h_kv, kv_len = k.shape[1], k.shape[2]
        g, span = h // h_kv, band.shape[1]
        scale = 1.0 / math.sqrt(d)
        calls = _runs(list(_windows(pattern, q_len, kv_len, blk)), blk, span, max(1, GROUP_ROWS // blk))
        # The calls' blocks cover [0, Q), so every row of out and lse is written below.
        out = torch.empty(b, h, q_len, d, dtype=q.dtype, device=q.device)  # (B, H, Q, D)
        lse = torch.empty(b, h, q_len, dtype=torch.float32, device=q.device)  # (B, H, Q)
        for kind, (i0, i1, lo, hi, c0), nblk in calls:
            if kind == "one":
                mask = band[: i1 - i0, c0: c0 + hi - lo]  # (rows, keys) view of the band
                o, l = flash_fwd(q[:, :, i0:i1], _heads(k[:, :, lo:hi], g), _heads(v[:, :, lo:hi], g), scale, mask)
                out[:, :, i0:i1], lse[:, :, i0:i1] = o, l
                continue
            rows = slice(i0, i0 + nblk * blk)
            for i, h0, nh, j in slots(b, h, h_kv):
                o, l = flash_fwd(row_blocks(q, i, h0, nh, i0, nblk, blk, blk),  # (nh, nblk, blk, D)
                                 row_blocks(k, i, h0, nh, lo, nblk, span, blk, j),  # (nh, nblk, span, D) windows
                                 row_blocks(v, i, h0, nh, lo, nblk, span, blk, j), scale, band)
                out[i, h0:h0 + nh, rows] = o.reshape(nh, nblk * blk, d)
                lse[i, h0:h0 + nh, rows] = l.reshape(nh, nblk * blk)
        ctx.save_for_backward(q, k, v, out, lse, band)
        ctx.pattern, ctx.blk = pattern, blk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, band = ctx.saved_tensors
        blk = ctx.blk
        b, h, q_len, d = q.shape
        h_kv, kv_len = k.shape[1], k.shape[2]
        g, span = h // h_kv, band.shape[1]
        scale = 1.0 / math.sqrt(d)
        go = grad_out.contiguous()  # (B, H, Q, D)
        dq = torch.empty_like(out)  # every row is one block's: written once below
        dk = torch.zeros(b, h_kv, kv_len, d, dtype=torch.float32, device=q.device)
        dv = torch.zeros_like(dk)
        stride = -(-span // blk)  # windows this many blocks apart do not overlap
        calls = _runs(list(_windows(ctx.pattern, q_len, kv_len, blk)), blk, span, max(1, GROUP_ROWS // blk))
        for kind, (i0, i1, lo, hi, c0), nblk in calls:
            if kind == "one":
                mask = band[: i1 - i0, c0: c0 + hi - lo]
                dqc, dkc, dvc = flash_bwd(go[:, :, i0:i1], q[:, :, i0:i1], _heads(k[:, :, lo:hi], g),
                                          _heads(v[:, :, lo:hi], g), out[:, :, i0:i1], lse[:, :, i0:i1], scale,
                                          mask)
                dq[:, :, i0:i1] = dqc
                dk[:, :, lo:hi] += dkc.view(b, h_kv, g, hi - lo, d).sum(dim=2)  # (B, Hkv, keys, D)
                dv[:, :, lo:hi] += dvc.view(b, h_kv, g, hi - lo, d).sum(dim=2)
                continue
            rows = slice(i0, i0 + nblk * blk)
            for i, h0, nh, j in slots(b, h, h_kv):
                blocks = lambda x, j=None: row_blocks(x, i, h0, nh, i0, nblk, blk, blk, j)  # noqa: E731
                windows = lambda x, j=j: row_blocks(x, i, h0, nh, lo, nblk, span, blk, j)  # noqa: E731
                dqc, dkw, dvw = flash_bwd(blocks(go), blocks(q), windows(k), windows(v), blocks(out),
                                          lse[i, h0:h0 + nh, rows].view(nh, nblk, blk), scale, band)
                dq[i, h0:h0 + nh, rows] = dqc.reshape(nh, nblk * blk, d)
                # Overlapping windows' gradients: added one residue class of blocks at a time, whose
                # windows are disjoint, into (heads, count, span, D) views of dk and dv.
                kh0, knh = (h0, nh) if j is None else (j, 1)
                for r in range(min(stride, nblk)):
                    count = len(range(r, nblk, stride))
                    for grad, part in ((dk, dkw), (dv, dvw)):
                        part = part[:, r::stride]  # (nh, count, span, D)
                        part = part if j is None else part.sum(0, keepdim=True)
                        row_blocks(grad, i, kh0, knh, lo + r * blk, count, span, stride * blk).add_(part)
        return dq, dk.to(k.dtype), dv.to(v.dtype), None, None, None


@register
class Local(Variant):
    name = "local"
    description = "Blocked sliding window: each query block sees block + 2w keys (fused CPU flash kernel), O(N*w)"
    patterns = ("local",)
    gqa = True
    decode = True
    default_params = {"block": 128, "kernel": "auto"}

    @classmethod
    def check_param(cls, key, value) -> None:
        if key == "kernel":
            check_kernel(cls.name, value)
        super().check_param(key, value)

    def not_supported_reasons(self, case: Case) -> list[str]:
        return super().not_supported_reasons(case) + flash_kernel_reasons(case.device, self.params["kernel"])

    def constants(self, case: Case) -> dict:
        blk = min(self.params["block"], case.q_len)
        if use_flash(torch.device(case.device), self.params["kernel"]):
            return {"band": _band(case.pattern_obj, blk, case.torch_dtype, case.device)}
        return {"blocked": _blocked(case.pattern_obj, case.q_len, case.seq_len, self.params["block"], case.device)}

    def forward(self, q, k, v, pattern: Pattern, blocked: torch.Tensor | None = None,
                band: torch.Tensor | None = None) -> torch.Tensor:
        if use_flash(q.device, self.params["kernel"]):
            blk = min(self.params["block"], q.shape[2])
            if band is None:
                band = _band(pattern, blk, q.dtype, q.device)
            return _FlashLocal.apply(q, k, v, pattern, blk, band)
        return self._torch_forward(q, k, v, pattern, blocked)

    def _torch_forward(self, q, k, v, pattern: Pattern, blocked: torch.Tensor | None) -> torch.Tensor:
        b, h, q_len, d = q.shape
        h_kv, kv_len = k.shape[1], k.shape[2]
        g = h // h_kv
        blk, nb, left, right = _geometry(q_len, pattern.window, pattern.causal, self.params["block"])
        if blocked is None:
            blocked = _blocked(pattern, q_len, kv_len, self.params["block"], q.device)
        span = blk + left + right  # keys seen by one query block
        offset = kv_len - q_len
        pad_q = nb * blk - q_len
        qb = F.pad(q, (0, 0, 0, pad_q)).reshape(b, h_kv, g, nb, blk, d)  # (B, Hkv, g, nb, blk, D)
        # Pad keys so that block i's window starts at offset + i*blk in padded coordinates.
        kp = F.pad(k, (0, 0, left, pad_q + right))  # (B, Hkv, kv_len + left + pad_q + right, D)
        vp = F.pad(v, (0, 0, left, pad_q + right))
        kw = kp[:, :, offset:].unfold(2, span, blk)[:, :, None]  # (B, Hkv, 1, nb, D, span), a strided view
        vw = vp[:, :, offset:].unfold(2, span, blk)[:, :, None]  # (B, Hkv, 1, nb, D, span)
        scores = (qb @ kw) * (1.0 / math.sqrt(d))  # (B, Hkv, g, nb, blk, span)
        # Finite fill: padded query rows may have no allowed key; they are sliced away below.
        scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)
        out = torch.softmax(scores, dim=-1) @ vw.transpose(-1, -2)  # (B, Hkv, g, nb, blk, D)
        return out.reshape(b, h, nb * blk, d)[:, :, :q_len]  # (B, H, q_len, D)
