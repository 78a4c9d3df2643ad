"""hierarchical: blocked two-level attention, O(N*s + N*N/s); never builds an N x N tensor.

Level one: each query scores the keys of its own segment (B, H, G, s, s). Level two: each query
scores the G segment summaries (B, H, G, s, G). Both are normalized in one softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.patterns import Pattern, segment_means
from harness.registry import Variant, register


@register
class Hierarchical(Variant):
    name = "hierarchical"
    description = "Blocked two-level attention: own-segment keys plus one mean summary per other segment"
    patterns = ("hierarchical",)

    def forward(self, q, k, v, pattern: Pattern) -> torch.Tensor:
        b, h, n, d = q.shape
        s = pattern.segment
        g = math.ceil(n / s)
        pad = g * s - n
        scale = 1.0 / math.sqrt(d)
        qs = F.pad(q, (0, 0, 0, pad)).reshape(b, h, g, s, d)  # (B, H, G, s, D)
        ks = F.pad(k, (0, 0, 0, pad)).reshape(b, h, g, s, d)  # (B, H, G, s, D)
        vs = F.pad(v, (0, 0, 0, pad)).reshape(b, h, g, s, d)  # (B, H, G, s, D)
        k_sum = segment_means(k, s)  # (B, H, G, D)
        v_sum = segment_means(v, s)  # (B, H, G, D)

        own = (qs @ ks.transpose(-1, -2)) * scale  # (B, H, G, s, s)
        summ = (qs @ k_sum[:, :, None].transpose(-1, -2)) * scale  # (B, H, G, s, G)

        dev = q.device
        r = torch.arange(s, device=dev)
        seg = torch.arange(g, device=dev)
        key_valid = (seg[:, None] * s + r[None, :]) < n  # (G, s): padded keys of the last segment
        own_ok = key_valid[:, None, :].expand(g, s, s)  # (G, s_q, s_k)
        if pattern.causal:
            own_ok = own_ok & (r[None, :, None] >= r[None, None, :])
            sum_ok = seg[None, :] < seg[:, None]  # (G_q, G_k): only earlier segments
        else:
            sum_ok = seg[None, :] != seg[:, None]  # (G_q, G_k): every other segment
        sum_ok = sum_ok[:, None, :].expand(g, s, g)  # (G, s, G)

        scores = torch.cat([own, summ], dim=-1)  # (B, H, G, s, s + G)
        allowed = torch.cat([own_ok, sum_ok], dim=-1)  # (G, s, s + G)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        p = torch.softmax(scores, dim=-1)
        out = p[..., :s] @ vs + p[..., s:] @ v_sum[:, :, None]  # (B, H, G, s, D)
        return out.reshape(b, h, g * s, d)[:, :, :n]  # (B, H, N, D)
