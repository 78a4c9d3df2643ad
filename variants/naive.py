"""naive: materialize the full score matrix, mask it, softmax, weight the values. The eager baseline."""

from __future__ import annotations

import math

import torch

from harness.patterns import Pattern, segment_means
from harness.registry import Variant, register


@register
class Naive(Variant):
    name = "naive"
    description = "Materialized (N x N) scores with a mask for local and hierarchical; the eager baseline"
    patterns = ("global", "local", "hierarchical")

    def forward(self, q, k, v, pattern: Pattern) -> torch.Tensor:
        n, d = q.shape[-2], q.shape[-1]
        if pattern.kind == "hierarchical":
            k = torch.cat([k, segment_means(k, pattern.segment)], dim=2)  # (B, H, N+G, D)
            v = torch.cat([v, segment_means(v, pattern.segment)], dim=2)  # (B, H, N+G, D)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d))  # (B, H, N, M)
        if pattern.kind != "global" or pattern.causal:
            scores = scores.masked_fill(~pattern.mask(n, q.device), float("-inf"))
        return torch.softmax(scores, dim=-1) @ v  # (B, H, N, D)
