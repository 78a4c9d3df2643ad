"""local: sliding-window attention in blocks of queries, O(N * w) time and memory.

Keys are padded by w on each side and viewed (no copy) as one overlapping window of block + 2w keys
per block of queries, so the whole pattern is one batched matmul; no N x N tensor is ever built.
Queries sit at the end of the keys (a decode step's window is aligned to the end of the cache), and
a group of query heads shares its key/value head through a broadcast dimension (no copy of k, v).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.core.case import Case
from harness.core.patterns import Pattern
from harness.core.registry import Variant, register


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


@register
class Local(Variant):
    name = "local"
    description = "Blocked sliding window: each query block sees block + 2w keys, O(N*w) time and memory"
    patterns = ("local",)
    gqa = True
    decode = True
    default_params = {"block": 128}

    def constants(self, case: Case) -> dict:
        return {"blocked": _blocked(case.pattern_obj, case.q_len, case.seq_len, self.params["block"], case.device)}

    def forward(self, q, k, v, pattern: Pattern, blocked: torch.Tensor | None = None) -> torch.Tensor:
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
