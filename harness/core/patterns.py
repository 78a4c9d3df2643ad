"""Attention patterns: *what* is computed, and the float64 references that define them.

For query position i and key position j (0-based, sequence length N), with scores scaled by
1/sqrt(head_dim):

* ``global``:        every j (causal: j <= i).
* ``local(w)``:      |i - j| <= w (causal: 0 <= i - j <= w).
* ``hierarchical(s)``: positions split into segments of length s (the last may be shorter). Query i
  in segment g attends, in ONE softmax, to every key of its own segment (causal: only j <= i) and to
  one summary per other segment g' (causal: only g' < g) whose key and value are the means of the
  keys and values of g'.

The references below are written for clarity, not speed; every variant is held to them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.core.errors import InputError

PATTERN_KINDS = ("global", "local", "hierarchical")


@dataclass(frozen=True)
class Pattern:
    """What is computed. ``window`` is used by ``local`` only, ``segment`` by ``hierarchical`` only."""

    kind: str = "global"
    causal: bool = False
    window: int | None = None
    segment: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in PATTERN_KINDS:
            raise InputError(f"unknown pattern {self.kind!r}; valid patterns: {', '.join(PATTERN_KINDS)}")
        if self.kind == "local":
            if self.window is None or int(self.window) < 1:
                raise InputError(f"window must be an integer >= 1 for the local pattern, got {self.window!r}; "
                                 "hint: pass e.g. window=128")
        elif self.window is not None:
            object.__setattr__(self, "window", None)
        if self.kind == "hierarchical":
            if self.segment is None or int(self.segment) < 1:
                raise InputError(f"segment must be an integer >= 1 for the hierarchical pattern, got "
                                 f"{self.segment!r}; hint: pass e.g. segment=64 (about sqrt(N))")
        elif self.segment is not None:
            object.__setattr__(self, "segment", None)

    @property
    def label(self) -> str:
        extra = {"local": f"(w={self.window})", "hierarchical": f"(s={self.segment})"}.get(self.kind, "")
        return f"{self.kind}{extra}{'-causal' if self.causal else ''}"

    # ---- definition -------------------------------------------------------------------------
    def num_segments(self, n: int) -> int:
        assert self.segment is not None
        return math.ceil(n / self.segment)

    def mask(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Boolean (N, M) matrix of allowed (query, key) pairs.

        M = N for global and local. For hierarchical, M = N + G: columns N.. are the G segment
        summaries, in segment order. Positions are compared by broadcasting an (N, 1) column against
        a (1, N) row straight into booleans: no N x N integer temporary is ever made.
        """
        i = torch.arange(n, device=device)[:, None]  # (N, 1) query positions
        j = torch.arange(n, device=device)[None, :]  # (1, N) key positions
        if self.kind == "global":
            return (j <= i) if self.causal else torch.ones(n, n, dtype=torch.bool, device=device)
        if self.kind == "local":
            allowed = j >= i - self.window  # (N, N) bool
            allowed &= (j <= i) if self.causal else (j <= i + self.window)
            return allowed
        s = self.segment
        g_q = i // s  # (N, 1) segment of each query
        own = (j // s) == g_q  # (N, N) bool
        if self.causal:
            own &= j <= i
        g = torch.arange(self.num_segments(n), device=device)[None, :]  # (1, G) summary index
        summary = (g < g_q) if self.causal else (g != g_q)  # (N, G) bool
        return torch.cat([own, summary], dim=1)

    def pairs(self, n: int) -> int:
        """Number of allowed (query, key) pairs, summaries included; closed form, O(1) for any N."""
        if self.kind == "global":
            return n * (n + 1) // 2 if self.causal else n * n
        if self.kind == "local":
            w = min(self.window, n - 1)  # a window past the sequence's ends sees nothing more
            if self.causal:  # query i sees min(i, w) + 1 keys
                return w * (w + 1) // 2 + (n - w) * (w + 1)
            return n + 2 * (w * n - w * (w + 1) // 2)  # the diagonal plus both bands of widths 1..w
        s = self.segment
        full, rest = divmod(n, s)  # `full` segments of s positions, and one of `rest` if rest > 0
        if self.causal:  # own segment up to the query, one summary per earlier segment
            own = full * s * (s + 1) // 2 + rest * (rest + 1) // 2
            return own + s * full * (full - 1) // 2 + rest * full
        own = full * s * s + rest * rest
        return own + n * (self.num_segments(n) - 1)


def segment_means(x: torch.Tensor, segment: int) -> torch.Tensor:
    """(B, H, N, D) -> (B, H, G, D): the mean of each segment of ``segment`` positions (last may be shorter)."""
    b, h, n, d = x.shape
    n_seg = math.ceil(n / segment)
    pad = n_seg * segment - n
    xp = torch.nn.functional.pad(x, (0, 0, 0, pad))  # (B, H, G*s, D), zero padded
    sums = xp.reshape(b, h, n_seg, segment, d).sum(dim=3)  # (B, H, G, D)
    counts = torch.full((n_seg,), float(segment), dtype=x.dtype, device=x.device)
    counts[-1] = n - (n_seg - 1) * segment
    return sums / counts[:, None]
