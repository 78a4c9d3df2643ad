"""Attention patterns: *what* is computed, on absolute positions.

Keys sit at positions j = 0 .. kv_len-1. Queries sit at the end of the keys (FlashAttention's
bottom-right alignment): query i has absolute position p = kv_len - q_len + i. A square case
(q_len == kv_len) has p = i. Scores are scaled by 1/sqrt(head_dim).

* ``global``:          every j (causal: j <= p).
* ``local(w)``:        |p - j| <= w (causal: 0 <= p - j <= w).
* ``hierarchical(s)``: key positions split into segments of length s (the last may be shorter). A
  query whose position p lies in segment g attends, in ONE softmax, to every key of its own segment
  (causal: only j <= p) and to one summary per other segment g' (causal: only g' < g) whose key and
  value are the means of the keys and values of g'.
* ``document``:        key positions split into consecutive documents of lengths ``doc_lens``
  (summing to kv_len); query p attends to the keys of its own document (causal: and j <= p).

The float64 references that every variant is held to are in ``harness.core.reference``.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass

import torch

from harness.core.errors import InputError

PATTERN_KINDS = ("global", "local", "hierarchical", "document")


def _tri(a: int, w: int) -> int:
    """sum(min(p, w) for p in range(a)), in closed form."""
    if a <= 0:
        return 0
    if a <= w + 1:
        return a * (a - 1) // 2
    return w * (w + 1) // 2 + (a - w - 1) * w


def make_doc_lens(kv_len: int, docs: int, seed: int = 0) -> tuple[int, ...]:
    """``docs`` document lengths (each >= 1) summing to ``kv_len``, varied as in packed batches, fixed by seed."""
    if not 1 <= docs <= kv_len:
        raise InputError(f"docs must be between 1 and kv_len={kv_len}, got {docs}; hint: fewer documents "
                         "than key positions")
    rng = random.Random(f"{seed}:{kv_len}:{docs}")
    cuts = sorted(rng.sample(range(1, kv_len), docs - 1))  # distinct cut points: every length >= 1
    bounds = [0, *cuts, kv_len]
    return tuple(b - a for a, b in zip(bounds, bounds[1:]))


@dataclass(frozen=True)
class Pattern:
    """What is computed. ``window``: local only; ``segment``: hierarchical only; ``doc_lens``: document only."""

    kind: str = "global"
    causal: bool = False
    window: int | None = None
    segment: int | None = None
    doc_lens: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in PATTERN_KINDS:
            raise InputError(f"unknown pattern {self.kind!r}; valid patterns: {', '.join(PATTERN_KINDS)}")
        for name, kind, hint in (("window", "local", "window=128"), ("segment", "hierarchical", "segment=64 (about sqrt(N))")):
            value = getattr(self, name)
            if self.kind == kind:
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise InputError(f"{name} must be an integer >= 1 for the {kind} pattern, got {value!r}; "
                                     f"hint: pass e.g. {hint}")
            elif value is not None:
                object.__setattr__(self, name, None)
        if self.kind == "document":
            lens = self.doc_lens
            if not lens or any(not isinstance(x, int) or isinstance(x, bool) or x < 1 for x in lens):
                raise InputError(f"doc_lens must be a non-empty list of integers >= 1 for the document pattern, "
                                 f"got {lens!r}; hint: pass e.g. doc_lens=(100, 28), summing to kv_len")
            object.__setattr__(self, "doc_lens", tuple(lens))
        elif self.doc_lens is not None:
            object.__setattr__(self, "doc_lens", None)

    @property
    def label(self) -> str:
        if self.kind == "document":
            lens = self.doc_lens
            extra = f"({'-'.join(map(str, lens))})" if len(lens) <= 4 else f"(k={len(lens)},{_crc(lens)})"
        else:
            extra = {"local": f"(w={self.window})", "hierarchical": f"(s={self.segment})"}.get(self.kind, "")
        return f"{self.kind}{extra}{'-causal' if self.causal else ''}"

    # ---- checks -----------------------------------------------------------------------------
    def check_lengths(self, q_len: int, kv_len: int) -> None:
        """Reject lengths this pattern cannot be applied to (one line naming the values)."""
        if q_len > kv_len:
            raise InputError(f"q_len={q_len} is larger than kv_len={kv_len}; queries sit at the end of the keys, "
                             "hint: q_len <= kv_len (q_len = 1 for decoding)")
        if self.kind == "document" and sum(self.doc_lens) != kv_len:
            raise InputError(f"doc_lens sum to {sum(self.doc_lens)}, not kv_len={kv_len}; hint: document lengths "
                             "must cover the key positions exactly")

    # ---- definition -------------------------------------------------------------------------
    def num_segments(self, n: int) -> int:
        assert self.segment is not None
        return math.ceil(n / self.segment)

    def mask(self, q_len: int, kv_len: int | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """Boolean (q_len, M) matrix of allowed (query, key) pairs (``mask(n)`` is the square case).

        M = kv_len, except hierarchical: M = kv_len + G, columns kv_len.. being the G segment
        summaries in order. Positions are compared by broadcasting an (q_len, 1) column against a
        (1, kv_len) row straight into booleans: no q_len x kv_len integer temporary is ever made.
        """
        kv_len = q_len if kv_len is None else kv_len
        self.check_lengths(q_len, kv_len)
        p = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]  # (Q, 1) query positions
        j = torch.arange(kv_len, device=device)[None, :]  # (1, K) key positions
        if self.kind == "global":
            return (j <= p) if self.causal else torch.ones(q_len, kv_len, dtype=torch.bool, device=device)
        if self.kind == "local":
            allowed = j >= p - self.window  # (Q, K) bool
            allowed &= (j <= p) if self.causal else (j <= p + self.window)
            return allowed
        if self.kind == "document":
            doc = self.doc_ids(kv_len, device)  # (K,) document of each key position
            allowed = doc[None, :] == doc[kv_len - q_len:, None]  # (Q, K) bool
            if self.causal:
                allowed &= j <= p
            return allowed
        s = self.segment
        g_q = p // s  # (Q, 1) segment of each query
        own = (j // s) == g_q  # (Q, K) bool
        if self.causal:
            own &= j <= p
        g = torch.arange(self.num_segments(kv_len), device=device)[None, :]  # (1, G) summary index
        summary = (g < g_q) if self.causal else (g != g_q)  # (Q, G) bool
        return torch.cat([own, summary], dim=1)

    def doc_ids(self, kv_len: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(kv_len,) int32: the document of each key position."""
        lens = torch.tensor(self.doc_lens, device=device)
        return torch.repeat_interleave(torch.arange(len(self.doc_lens), device=device, dtype=torch.int32), lens,
                                       output_size=kv_len)

    def doc_bounds(self) -> list[tuple[int, int]]:
        """[(start, end)] of each document, in key positions."""
        out, start = [], 0
        for n in self.doc_lens:
            out.append((start, start + n))
            start += n
        return out

    def pairs(self, q_len: int, kv_len: int | None = None) -> int:
        """Number of allowed (query, key) pairs, summaries included; closed form (O(documents) for document)."""
        kv_len = q_len if kv_len is None else kv_len
        o = kv_len - q_len  # position of the first query
        if self.kind == "global":
            return kv_len * (kv_len + 1) // 2 - o * (o + 1) // 2 if self.causal else q_len * kv_len
        if self.kind == "local":
            w = self.window
            left = _tri(kv_len, w) - _tri(o, w)  # keys before each query, at most w of them
            right = 0 if self.causal else _tri(q_len, w)  # keys after each query, at most w of them
            return left + right + q_len
        if self.kind == "document":
            total = 0
            for start, end in self.doc_bounds():
                first = max(o, start)  # first query of this document
                count = max(0, end - first)
                if self.causal:  # query p sees p - start + 1 keys
                    total += (first - start + 1 + end - start) * count // 2
                else:
                    total += count * (end - start)
            return total
        s = self.segment
        if self.causal:  # own keys up to the query: (p mod s) + 1; summaries: p // s
            def prefix(a: int) -> int:
                full, r = divmod(a, s)
                return full * s * (s - 1) // 2 + r * (r - 1) // 2 + s * full * (full - 1) // 2 + r * full
            return prefix(kv_len) - prefix(o) + q_len

        def own(a: int) -> int:  # sum over p < a of the length of p's segment
            full, r = divmod(a, s)
            return full * s * s + (r * min(s, kv_len - full * s) if r else 0)
        return own(kv_len) - own(o) + q_len * (self.num_segments(kv_len) - 1)


def _crc(lens: tuple[int, ...]) -> str:
    return f"{zlib.crc32(','.join(map(str, lens)).encode()):08x}"


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
