"""Attention patterns: *what* is computed, on absolute positions.

Keys sit at positions j = 0 .. kv_len-1. Queries sit at the end of the keys (FlashAttention's
bottom-right alignment): query i has absolute position p = kv_len - q_len + i. A square case
(q_len == kv_len) has p = i. Scores are scaled by 1/sqrt(head_dim).

* ``global``:          every j (causal: j <= p).
* ``local(w)``:        |p - j| <= w (causal: 0 <= p - j <= w).
* ``sink(w, s)``:      StreamingLLM's attention sinks: the local window |p - j| <= w (causal:
  0 <= p - j <= w) plus the first ``sinks`` keys, j < s (causal: and j <= p).
* ``dilated(w, d)``:   the Sparse Transformer's strided pattern: every d-th key of the window,
  |p - j| <= w and (p - j) mod d == 0 (causal: 0 <= p - j <= w and (p - j) mod d == 0). d = 1 is local.
* ``bigbird(w, g)``:   the local window plus ``globals`` global positions: query p attends key j when
  |p - j| <= w, or j < g (every query attends the global keys), or p < g (a global query attends
  every key); causal: and never j > p.
* ``hierarchical(s)``: key positions split into segments of length s (the last may be shorter). A
  query whose position p lies in segment g attends, in ONE softmax, to every key of its own segment
  (causal: only j <= p) and to one summary per other segment g' (causal: only g' < g) whose key and
  value are the means of the keys and values of g'.
* ``document``:        key positions split into consecutive documents of lengths ``doc_lens``
  (summing to kv_len); query p attends to the keys of its own document (causal: and j <= p).
* ``topk(k)``:         each query keeps the k highest-scoring keys among those it may see (every j;
  causal: j <= p), scores q.k / sqrt(head_dim), ties broken as ``torch.topk`` breaks them on the
  scores given (the reference's are float64), then one softmax over the kept keys. Its mask depends
  on the scores (``Pattern.mask(..., scores=...)``); with fewer than k keys to see, a query keeps
  them all. Not a kernel: the oracle bound of every sparse pattern with a budget of k keys per query.

The float64 references that every variant is held to are in ``harness.core.reference``.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass

import torch

from harness.core.errors import InputError

PATTERN_KINDS = ("global", "local", "sink", "dilated", "bigbird", "hierarchical", "document", "topk")

# The integer parameters each pattern takes (``doc_lens``, a tuple, is the document pattern's); every
# other parameter of a pattern is None.
PATTERN_PARAMS: dict[str, tuple[str, ...]] = {
    "global": (), "local": ("window",), "sink": ("window", "sinks"), "dilated": ("window", "stride"),
    "bigbird": ("window", "globals"), "hierarchical": ("segment",), "document": (), "topk": ("topk",),
}
INT_PARAMS = ("window", "segment", "sinks", "stride", "globals", "topk")

# Per integer parameter: its letter in labels, and an example for hints.
_PARAM_LETTER = {"window": "w", "segment": "s", "sinks": "s", "stride": "d", "globals": "g", "topk": "k"}
_PARAM_HINT = {"window": "window=128", "segment": "segment=64 (about sqrt(N))", "sinks": "sinks=4",
               "stride": "stride=2", "globals": "globals=4", "topk": "topk=64"}


def _tri(a: int, w: int) -> int:
    """sum(min(p, w) for p in range(a)), in closed form."""
    if a <= 0:
        return 0
    if a <= w + 1:
        return a * (a - 1) // 2
    return w * (w + 1) // 2 + (a - w - 1) * w


def _capped(m: int, c: int) -> int:
    """sum(min(t, c) for t in range(1, m + 1)), in closed form (0 when m <= 0)."""
    if m <= 0:
        return 0
    if m <= c:
        return m * (m + 1) // 2
    return c * (c + 1) // 2 + (m - c) * c


def _floor_div_sum(a: int, w: int, d: int) -> int:
    """sum(min(p, w) // d for p in range(a)), in closed form."""
    if a <= 0:
        return 0
    m = min(a, w + 1)  # p = 0 .. m-1 have min(p, w) = p
    full, r = divmod(m, d)
    return d * full * (full - 1) // 2 + r * full + (a - m) * (w // d)


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
    """What is computed. Each kind takes the parameters ``PATTERN_PARAMS`` names (``doc_lens``: document
    only); the others are set to None."""

    kind: str = "global"
    causal: bool = False
    window: int | None = None
    segment: int | None = None
    doc_lens: tuple[int, ...] | None = None
    sinks: int | None = None
    stride: int | None = None
    globals: int | None = None
    topk: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in PATTERN_KINDS:
            raise InputError(f"unknown pattern {self.kind!r}; valid patterns: {', '.join(PATTERN_KINDS)}")
        used = PATTERN_PARAMS[self.kind]
        for name in INT_PARAMS:
            value = getattr(self, name)
            if name in used:
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise InputError(f"{name} must be an integer >= 1 for the {self.kind} pattern, got {value!r}; "
                                     f"hint: pass e.g. {_PARAM_HINT[name]}")
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
        """``local(w=128)``, ``sink(w=128,s=4)``, ``dilated(w=256,d=2)``, ``bigbird(w=128,g=4)``,
        ``topk(k=64)``, ``hierarchical(s=32)``, ``document(1-1-97-1)``; ``-causal`` appended."""
        if self.kind == "document":
            lens = self.doc_lens
            extra = f"({'-'.join(map(str, lens))})" if len(lens) <= 4 else f"(k={len(lens)},{_crc(lens)})"
        else:
            params = PATTERN_PARAMS[self.kind]
            extra = f"({','.join(f'{_PARAM_LETTER[n]}={getattr(self, n)}' for n in params)})" if params else ""
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

    def mask(self, q_len: int, kv_len: int | None = None, device: torch.device | str = "cpu",
             scores: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean (q_len, M) matrix of allowed (query, key) pairs (``mask(n)`` is the square case).

        M = kv_len, except hierarchical: M = kv_len + G, columns kv_len.. being the G segment
        summaries in order. Positions are compared by broadcasting an (q_len, 1) column against a
        (1, kv_len) row straight into booleans: no q_len x kv_len integer temporary is ever made.

        ``scores`` (the (..., q_len, kv_len) scores q.k / sqrt(head_dim), any float dtype) is what
        topk's mask depends on: it then returns a (..., q_len, kv_len) mask, and refuses to be built
        without them. Every other pattern ignores ``scores``.
        """
        kv_len = q_len if kv_len is None else kv_len
        self.check_lengths(q_len, kv_len)
        if self.kind == "topk":
            return self._topk_mask(q_len, kv_len, scores)
        p = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]  # (Q, 1) query positions
        j = torch.arange(kv_len, device=device)[None, :]  # (1, K) key positions
        if self.kind == "global":
            return (j <= p) if self.causal else torch.ones(q_len, kv_len, dtype=torch.bool, device=device)
        if self.kind in ("local", "sink", "dilated", "bigbird"):
            allowed = j >= p - self.window  # (Q, K) bool: the local window
            allowed &= (j <= p) if self.causal else (j <= p + self.window)
            if self.kind == "dilated":
                allowed &= (p % self.stride) == (j % self.stride)  # (Q, K) bool: (p - j) mod d == 0
            elif self.kind in ("sink", "bigbird"):
                n_global = self.sinks if self.kind == "sink" else self.globals
                extra = j < n_global  # (1, K): the sink / global keys
                if self.kind == "bigbird":
                    extra = extra | (p < n_global)  # (Q, K): global queries see every key
                allowed |= extra
                del extra
                if self.causal:  # the causal window already has j <= p: this trims the extra keys only
                    allowed &= j <= p
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

    def _topk_mask(self, q_len: int, kv_len: int, scores: torch.Tensor | None) -> torch.Tensor:
        """(..., q_len, kv_len) bool: the ``topk`` highest of ``scores`` among the keys each query may see."""
        if scores is None:
            raise InputError(f"the {self.label} pattern's mask depends on the scores; hint: pass "
                             "mask(q_len, kv_len, scores=q @ k.transpose(-1, -2) / sqrt(head_dim))")
        if not isinstance(scores, torch.Tensor) or scores.dim() < 2 or tuple(scores.shape[-2:]) != (q_len, kv_len):
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise InputError(f"scores of shape {shape} do not end in (q_len, kv_len) = ({q_len}, {kv_len}); "
                             "hint: pass the (..., q_len, kv_len) scores of the queries against the keys")
        device = scores.device
        k = min(self.topk, kv_len)
        allowed = Pattern("global", self.causal).mask(q_len, kv_len, device)  # (Q, K) bool
        ranked = scores.detach()
        if self.causal:
            ranked = ranked.masked_fill(~allowed, float("-inf"))  # (..., Q, K): unseen keys rank last
        idx = torch.topk(ranked, k, dim=-1).indices  # (..., Q, k), ties broken as torch.topk breaks them
        keep = torch.zeros(scores.shape, dtype=torch.bool, device=device)  # (..., Q, K)
        keep.scatter_(-1, idx, True)
        return keep & allowed if self.causal else keep  # a causal row with fewer than k keys keeps only those

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
        """Number of allowed (query, key) pairs, summaries included; closed form (O(documents) for document).

        topk: the pairs it keeps, sum over queries of min(topk, keys the query may see)."""
        kv_len = q_len if kv_len is None else kv_len
        o = kv_len - q_len  # position of the first query
        if self.kind == "global":
            return kv_len * (kv_len + 1) // 2 - o * (o + 1) // 2 if self.causal else q_len * kv_len
        if self.kind == "topk":  # causal: query p sees p + 1 keys
            k = self.topk
            return _capped(kv_len, k) - _capped(o, k) if self.causal else q_len * min(k, kv_len)
        if self.kind == "local":
            return self._local_pairs(q_len, kv_len)
        if self.kind == "dilated":
            w, d = self.window, self.stride
            left = _floor_div_sum(kv_len, w, d) - _floor_div_sum(o, w, d)  # keys p - d, p - 2d, .. >= 0 within w
            right = 0 if self.causal else _floor_div_sum(q_len, w, d)  # keys p + d, .. < kv_len within w
            return left + right + q_len
        if self.kind == "sink":
            return self._sink_pairs(q_len, kv_len, self.sinks)
        if self.kind == "bigbird":
            g = self.globals
            first = min(max(o, g), kv_len)  # queries at p < first are global queries, every later one is not
            n_global = first - o
            if self.causal:  # a global query p sees p + 1 keys
                full = first * (first + 1) // 2 - o * (o + 1) // 2
            else:
                full = n_global * kv_len
            # a query p >= g sees its window plus the g global keys: the sink pattern with g sinks
            return full + (self._sink_pairs(kv_len - first, kv_len, g) if first < kv_len else 0)
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

    def _local_pairs(self, q_len: int, kv_len: int) -> int:
        """Pairs of the local window |p - j| <= w (causal: 0 <= p - j <= w) of queries p = kv_len - q_len ..."""
        w, o = self.window, kv_len - q_len
        left = _tri(kv_len, w) - _tri(o, w)  # keys before each query, at most w of them
        right = 0 if self.causal else _tri(q_len, w)  # keys after each query, at most w of them
        return left + right + q_len

    def _sink_pairs(self, q_len: int, kv_len: int, sinks: int) -> int:
        """The window's pairs plus, per query p, the keys j < sinks outside its window: j < p - w, and
        (not causal) j > p + w."""
        w, o, s = self.window, kv_len - q_len, min(sinks, kv_len)
        before = _capped(kv_len - 1 - w, s) - _capped(o - 1 - w, s)  # sum over p of clamp(p - w, 0, s)
        after = 0
        if not self.causal:  # sum over p of max(0, s - w - 1 - p)
            c = s - w - 1

            def upto(a: int) -> int:  # sum over p < a of max(0, c - p)
                m = max(0, min(a, c))
                return m * c - m * (m - 1) // 2
            after = upto(kv_len) - upto(o)
        return self._local_pairs(q_len, kv_len) + before + after


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
