"""naive: materialize the full score matrix, mask it, softmax, weight the values. The eager baseline.

Grouped-query heads without copying k and v: the ``heads / kv_heads`` query heads of a group are
stacked as extra query rows of their key/value head, so one batched matmul serves the whole group.

topk's mask depends on the scores, so it is built inside ``forward`` from the scores just computed
(float32 for float16 and bfloat16 inputs, so that rounding does not tie keys the reference tells
apart): an oracle, not a kernel.
"""

from __future__ import annotations

import math

import torch

from harness.core.case import Case
from harness.core.patterns import Pattern, segment_means
from harness.core.registry import Variant, register


def _blocked(pattern: Pattern, q_len: int, kv_len: int, device) -> torch.Tensor | None:
    """(q_len, M) boolean of the pairs the pattern forbids; None when every pair is allowed or, for
    topk, when they depend on the scores (built in ``forward``)."""
    if (pattern.kind == "global" and not pattern.causal) or pattern.kind == "topk":
        return None
    return pattern.mask(q_len, kv_len, device).logical_not_()


@register
class Naive(Variant):
    name = "naive"
    description = ("Materialized (N x N) scores with a mask for every pattern but global (topk's from the scores); "
                   "the eager baseline")
    patterns = ("global", "local", "sink", "dilated", "bigbird", "hierarchical", "document", "topk")
    gqa = True
    decode = True

    def constants(self, case: Case) -> dict:
        """The forbidden-pairs mask, built once per shape (one byte per score)."""
        return {"blocked": _blocked(case.pattern_obj, case.q_len, case.seq_len, case.device)}

    def forward(self, q, k, v, pattern: Pattern, blocked: torch.Tensor | None = None) -> torch.Tensor:
        b, h, q_len, d = q.shape
        h_kv, kv_len = k.shape[1], k.shape[2]
        group = h // h_kv
        if pattern.kind == "hierarchical":
            k = torch.cat([k, segment_means(k, pattern.segment)], dim=2)  # (B, Hkv, kv_len+G, D)
            v = torch.cat([v, segment_means(v, pattern.segment)], dim=2)  # (B, Hkv, kv_len+G, D)
        qg = (q * (1.0 / math.sqrt(d))).reshape(b, h_kv, group * q_len, d)  # (B, Hkv, g*q_len, D): a group's rows
        scores = (qg @ k.transpose(-1, -2)).view(b, h_kv, group, q_len, -1)  # (B, Hkv, g, q_len, M)
        if pattern.kind == "topk":
            ranked = scores.detach()  # (B, Hkv, g, q_len, K)
            if ranked.dtype in (torch.float16, torch.bfloat16):  # 16-bit scores tie keys the reference tells apart
                q32 = q.detach().float().reshape(b, h_kv, group * q_len, d)  # (B, Hkv, g*q_len, D)
                ranked = (q32 @ k.detach().float().transpose(-1, -2)).view_as(ranked) / math.sqrt(d)
            blocked = pattern.mask(q_len, kv_len, q.device, scores=ranked).logical_not_()  # (B, Hkv, g, q_len, K)
        elif blocked is None and (pattern.kind != "global" or pattern.causal):
            blocked = _blocked(pattern, q_len, kv_len, q.device)
        if blocked is not None:
            scores.masked_fill_(blocked, float("-inf"))  # in place: no second score matrix
        probs = torch.softmax(scores, dim=-1).view(b, h_kv, group * q_len, -1)  # (B, Hkv, g*q_len, M)
        return (probs @ v).view(b, h, q_len, d)  # (B, H, q_len, D)
