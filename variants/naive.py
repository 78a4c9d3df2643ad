"""naive: materialize the full score matrix, mask it, softmax, weight the values. The eager baseline."""

from __future__ import annotations

import math

import torch

from harness.core.case import Case
from harness.core.patterns import Pattern, segment_means
from harness.core.registry import Variant, register


def _blocked(pattern: Pattern, n: int, device) -> torch.Tensor | None:
    """(N, M) boolean of the pairs the pattern forbids; None when every pair is allowed."""
    if pattern.kind == "global" and not pattern.causal:
        return None
    return pattern.mask(n, device).logical_not_()


@register
class Naive(Variant):
    name = "naive"
    description = "Materialized (N x N) scores with a mask for local and hierarchical; the eager baseline"
    patterns = ("global", "local", "hierarchical")

    def constants(self, case: Case) -> dict:
        """The forbidden-pairs mask, built once per shape (one byte per score)."""
        return {"blocked": _blocked(case.pattern_obj, case.seq_len, case.device)}

    def forward(self, q, k, v, pattern: Pattern, blocked: torch.Tensor | None = None) -> torch.Tensor:
        n, d = q.shape[-2], q.shape[-1]
        if pattern.kind == "hierarchical":
            k = torch.cat([k, segment_means(k, pattern.segment)], dim=2)  # (B, H, N+G, D)
            v = torch.cat([v, segment_means(v, pattern.segment)], dim=2)  # (B, H, N+G, D)
        scores = (q * (1.0 / math.sqrt(d))) @ k.transpose(-1, -2)  # (B, H, N, M)
        if blocked is None and (pattern.kind != "global" or pattern.causal):
            blocked = _blocked(pattern, n, q.device)
        if blocked is not None:
            scores.masked_fill_(blocked, float("-inf"))  # in place: no second score matrix
        return torch.softmax(scores, dim=-1) @ v  # (B, H, N, D)
