"""What an approximate pattern gives up: its output and attention weights against exact global
attention (same causal flag, same inputs), in float64.

For a cell whose pattern is not ``global``, on a sample of query rows (every row up to
``MAX_ROWS``, else ``MAX_ROWS`` rows evenly spaced, the last included):

* ``fidelity_out_rel_error``: ||out - out_global|| / ||out_global|| over the sampled rows, with its
  median and 90th percentile across (batch, head) pairs (``_p50``, ``_p90``);
* ``fidelity_mass_dropped``: the share of global attention's softmax mass on the keys the pattern
  leaves out, mean over queries (for ``hierarchical``: the mass on the summarized segments), with its
  90th percentile across heads;
* ``fidelity_kl``: KL(pattern || global) in nats, mean over queries. The other direction,
  KL(global || pattern), is infinite for every pattern that drops a key, so it cannot rank patterns.
  For a plain mask this equals -log(1 - mass dropped); a ``hierarchical`` summary slot's weight is
  spread evenly over the keys of its segment, so both distributions live on the same keys;
* ``fidelity_topk_out_rel_error``: the output error of the top-k oracle (each query keeps its k
  highest-scoring keys) with the pattern's own budget, k = its mean keys per query: the least error
  any sparse pattern with that many keys could reach (not for ``topk`` itself);
* ``fidelity_rows``: the query rows sampled.

Everything here is a pure function of tensors; ``FidelityCache`` keeps one result per (pattern,
inputs, shape), so the variants and passes of a configuration share it.
"""

from __future__ import annotations

import math

import torch

from harness.core.patterns import Pattern, segment_means
from harness.core.reference import expand_kv

MAX_ROWS = 256  # query rows sampled per (batch, head); every row of shorter sequences
FIDELITY_COLUMNS = ("fidelity_out_rel_error", "fidelity_out_rel_error_p50", "fidelity_out_rel_error_p90",
                    "fidelity_mass_dropped", "fidelity_mass_dropped_p90", "fidelity_kl",
                    "fidelity_topk_out_rel_error", "fidelity_rows")


def sample_rows(q_len: int, max_rows: int = MAX_ROWS) -> torch.Tensor:
    """Indices of the query rows to check: all of them, or ``max_rows`` evenly spaced ending at the last."""
    if q_len <= max_rows:
        return torch.arange(q_len)
    return torch.linspace(0, q_len - 1, max_rows).round().long().unique()


def _percentile(x: torch.Tensor, p: float) -> float:
    return float(torch.quantile(x.flatten().to(torch.float64), p))


def _kept_probs(probs_g: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Global probabilities restricted to ``keep`` and renormalized: the pattern's distribution over keys
    when the pattern is a mask of exact scores."""
    kept = probs_g * keep
    return kept / kept.sum(-1, keepdim=True).clamp_min(1e-300)


def _topk_keep(scores: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    """(…, R, K) boolean: each row's ``k`` highest allowed scores (fewer when fewer keys are allowed)."""
    masked = scores.masked_fill(~allowed, float("-inf"))
    k = max(1, min(k, scores.shape[-1]))
    idx = masked.topk(k, dim=-1).indices  # (…, R, k)
    keep = torch.zeros_like(allowed.expand_as(scores)).scatter_(-1, idx, True)
    return keep & allowed


def fidelity(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
             max_rows: int = MAX_ROWS) -> dict:
    """The fidelity columns of ``pattern`` on q (B, H, Q, D), k and v (B, Hkv, K, D): see the module."""
    q, k, v = (t.detach().to(torch.float64) for t in (q, k, v))
    b, h, q_len, d = q.shape
    kv_len = k.shape[2]
    k, v = expand_kv(k, h), expand_kv(v, h)  # (B, H, K, D)
    rows = sample_rows(q_len, max_rows).to(q.device)
    qs = q[:, :, rows]  # (B, H, R, D)
    scores = qs @ k.transpose(-1, -2) / math.sqrt(d)  # (B, H, R, K)
    dense = Pattern("global", pattern.causal)
    allowed = dense.mask(q_len, kv_len, q.device)[rows]  # (R, K)
    probs_g = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)  # (B, H, R, K)
    out_g = probs_g @ v  # (B, H, R, D)

    if pattern.kind == "hierarchical":
        mask = pattern.mask(q_len, kv_len, q.device)[rows]  # (R, K + G)
        kbar, vbar = segment_means(k, pattern.segment), segment_means(v, pattern.segment)  # (B, H, G, D)
        s_all = torch.cat([scores, qs @ kbar.transpose(-1, -2) / math.sqrt(d)], dim=-1)  # (B, H, R, K+G)
        p_all = torch.softmax(s_all.masked_fill(~mask, float("-inf")), dim=-1)
        out_p = p_all @ torch.cat([v, vbar], dim=2)  # (B, H, R, D)
        keep = mask[:, :kv_len]  # own-segment keys: the rest is summarized
        seg = torch.arange(kv_len, device=q.device) // pattern.segment  # (K,) segment of each key
        sizes = torch.bincount(seg).to(torch.float64)  # (G,)
        spread = p_all[..., kv_len:][..., seg] / sizes[seg]  # (B, H, R, K) summary weight per key
        probs_p = p_all[..., :kv_len] + spread
    else:
        keep = (_topk_keep(scores, allowed, pattern.topk) if pattern.kind == "topk"
                else pattern.mask(q_len, kv_len, q.device)[rows])  # (…, R, K)
        probs_p = _kept_probs(probs_g, keep)
        out_p = probs_p @ v

    per_head = (torch.linalg.vector_norm(out_p - out_g, dim=(-2, -1))
                / torch.linalg.vector_norm(out_g, dim=(-2, -1)).clamp_min(1e-300))  # (B, H)
    mass = (probs_g * ~keep).sum(-1)  # (B, H, R)
    pos = probs_p > 0
    kl = torch.where(pos, probs_p * (probs_p.clamp_min(1e-300).log() - probs_g.clamp_min(1e-300).log()),
                     torch.zeros((), dtype=torch.float64)).sum(-1)  # (B, H, R)
    fields = {
        "fidelity_out_rel_error": float(torch.linalg.vector_norm(out_p - out_g)
                                        / torch.linalg.vector_norm(out_g).clamp_min(1e-300)),
        "fidelity_out_rel_error_p50": _percentile(per_head, 0.5),
        "fidelity_out_rel_error_p90": _percentile(per_head, 0.9),
        "fidelity_mass_dropped": float(mass.mean()),
        "fidelity_mass_dropped_p90": _percentile(mass.mean(-1), 0.9),
        "fidelity_kl": float(kl.clamp_min(0).mean()),
        "fidelity_topk_out_rel_error": None,
        "fidelity_rows": int(rows.numel()),
    }
    if pattern.kind != "topk":
        budget = max(1, round(pattern.pairs(q_len, kv_len) / q_len))  # the pattern's mean keys per query
        oracle = _kept_probs(probs_g, _topk_keep(scores, allowed, budget)) @ v
        fields["fidelity_topk_out_rel_error"] = float(torch.linalg.vector_norm(oracle - out_g)
                                                      / torch.linalg.vector_norm(out_g).clamp_min(1e-300))
    return fields


class FidelityCache:
    """One fidelity result per (pattern, inputs key): every variant and pass of a configuration shares it."""

    def __init__(self, size: int = 64) -> None:
        self.size, self._items = size, {}

    def get(self, key, compute) -> dict:
        if key not in self._items:
            self._items[key] = compute()
            while len(self._items) > self.size:
                self._items.pop(next(iter(self._items)))
        return dict(self._items[key])
