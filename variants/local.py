"""local: sliding-window attention in blocks of queries, O(N * w) time and memory.

Keys are padded by w on each side and viewed (no copy) as one overlapping window of block + 2w keys
per block of queries, so the whole pattern is one batched matmul; no N x N tensor is ever built.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.patterns import Pattern
from harness.registry import Variant, register


@register
class Local(Variant):
    name = "local"
    description = "Blocked sliding window: each query block sees block + 2w keys, O(N*w) time and memory"
    patterns = ("local",)
    default_params = {"block": 128}

    def forward(self, q, k, v, pattern: Pattern) -> torch.Tensor:
        b, h, n, d = q.shape
        w = pattern.window
        blk = min(self.params["block"], n)
        nb = math.ceil(n / blk)
        left, right = w, (0 if pattern.causal else w)
        span = blk + left + right  # keys seen by one query block
        pad_q = nb * blk - n
        qb = F.pad(q, (0, 0, 0, pad_q)).reshape(b, h, nb, blk, d)  # (B, H, nb, blk, D)
        # Pad keys so that block i's window starts at i*blk in padded coordinates.
        kp = F.pad(k, (0, 0, left, pad_q + right))  # (B, H, nb*blk + left + right, D)
        vp = F.pad(v, (0, 0, left, pad_q + right))
        kw = kp.unfold(2, span, blk)  # (B, H, nb, D, span), a strided view
        vw = vp.unfold(2, span, blk)  # (B, H, nb, D, span)
        scores = (qb @ kw) * (1.0 / math.sqrt(d))  # (B, H, nb, blk, span)
        # Query r of block i is position i*blk + r; key c of its window is position i*blk - left + c.
        r = torch.arange(blk, device=q.device)[:, None]
        c = torch.arange(span, device=q.device)[None, :]
        dist = r + left - c  # (blk, span): query position minus key position
        band = (dist >= 0) & (dist <= w) if pattern.causal else dist.abs() <= w
        key_pos = torch.arange(nb, device=q.device)[:, None, None] * blk - left + c  # (nb, 1, span)
        allowed = band & (key_pos >= 0) & (key_pos < n)  # (nb, blk, span)
        # Finite fill: padded query rows may have no allowed key; they are sliced away below.
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        out = torch.softmax(scores, dim=-1) @ vw.transpose(-1, -2)  # (B, H, nb, blk, D)
        return out.reshape(b, h, nb * blk, d)[:, :, :n]  # (B, H, N, D)
