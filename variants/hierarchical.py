"""hierarchical: blocked two-level attention, O(N*s + N*N/s); never builds an N x N tensor.

Level one: each query scores the keys of its own segment (B, H, g, s, s). Level two: each query
scores the G segment summaries (B, H, g, s, G). Both are normalized in one softmax (a shared row
maximum and denominator, without concatenating the two score blocks). Segments are processed
``seg_block`` at a time so the working set stays small (cache-sized) whatever N is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.core.case import Case
from harness.core.patterns import Pattern, segment_means
from harness.core.registry import Variant, register


def _allowed(pattern: Pattern, n: int, device) -> dict[str, torch.Tensor]:
    """Per-shape masks: own-segment slots (G, 1|s, s) and summary slots (G, 1, G) a query may use."""
    s = pattern.segment
    g_all = math.ceil(n / s)
    r = torch.arange(s, device=device)
    seg = torch.arange(g_all, device=device)
    key_valid = (seg[:, None] * s + r[None, :]) < n  # (G, s): padded keys of the last segment
    own_ok = key_valid[:, None, :]  # (G, 1, s_k)
    if pattern.causal:
        own_ok = own_ok & (r[None, :, None] >= r[None, None, :])  # (G, s_q, s_k)
        sum_ok = seg[None, :] < seg[:, None]  # (G_q, G_k): only earlier segments
    else:
        sum_ok = seg[None, :] != seg[:, None]  # (G_q, G_k): every other segment
    return {"own_ok": own_ok, "sum_ok": sum_ok[:, None, :]}  # sum_ok: (G, 1, G)


@register
class Hierarchical(Variant):
    name = "hierarchical"
    description = "Blocked two-level attention: own-segment keys plus one mean summary per other segment"
    patterns = ("hierarchical",)
    gqa = True
    default_params = {"seg_block": 8}

    def constants(self, case: Case) -> dict:
        return _allowed(case.pattern_obj, case.seq_len, case.device)

    def forward(self, q, k, v, pattern: Pattern, own_ok: torch.Tensor | None = None,
                sum_ok: torch.Tensor | None = None) -> torch.Tensor:
        b, h, n, d = q.shape
        h_kv = k.shape[1]
        g = h // h_kv  # query heads per key/value head: a broadcast dimension, k and v are not copied
        s = pattern.segment
        g_all = math.ceil(n / s)
        pad = g_all * s - n
        scale = 1.0 / math.sqrt(d)
        if own_ok is None or sum_ok is None:
            own_ok, sum_ok = _allowed(pattern, n, q.device).values()
        qs = F.pad(q * scale, (0, 0, 0, pad)).reshape(b, h_kv, g, g_all, s, d)  # (B, Hkv, g, G, s, D), pre-scaled
        ks = F.pad(k, (0, 0, 0, pad)).reshape(b, h_kv, 1, g_all, s, d)  # (B, Hkv, 1, G, s, D)
        vs = F.pad(v, (0, 0, 0, pad)).reshape(b, h_kv, 1, g_all, s, d)  # (B, Hkv, 1, G, s, D)
        k_sum_t = segment_means(k, s).transpose(-1, -2)[:, :, None, None]  # (B, Hkv, 1, 1, D, G)
        v_sum = segment_means(v, s)[:, :, None, None]  # (B, Hkv, 1, 1, G, D)

        outs = []
        step = max(1, int(self.params["seg_block"]))
        for g0 in range(0, g_all, step):
            g1 = min(g_all, g0 + step)
            qb = qs[:, :, :, g0:g1]  # (B, Hkv, g, gb, s, D)
            own = qb @ ks[:, :, :, g0:g1].transpose(-1, -2)  # (B, Hkv, g, gb, s, s)
            summ = qb @ k_sum_t  # (B, Hkv, g, gb, s, G)
            neg = torch.finfo(own.dtype).min
            own = own.masked_fill(~own_ok[g0:g1], neg)
            summ = summ.masked_fill(~sum_ok[g0:g1], neg)
            m = torch.maximum(own.amax(dim=-1, keepdim=True), summ.amax(dim=-1, keepdim=True))  # (..., s, 1)
            e_own = (own - m).exp_()
            e_sum = (summ - m).exp_()
            denom = e_own.sum(dim=-1, keepdim=True) + e_sum.sum(dim=-1, keepdim=True)
            outs.append((e_own @ vs[:, :, :, g0:g1] + e_sum @ v_sum) / denom)  # (B, Hkv, g, gb, s, D)
        out = torch.cat(outs, dim=3) if len(outs) > 1 else outs[0]  # (B, Hkv, g, G, s, D)
        return out.reshape(b, h, g_all * s, d)[:, :, :n]  # (B, H, N, D)
