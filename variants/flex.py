"""flex: FlexAttention (torch.nn.attention.flex_attention) compiled with torch.compile.

Global, local, sink, dilated, bigbird and document patterns, causal or not, on absolute positions
(decoding), with grouped-query heads (``enable_gqa``), through block masks (not topk: its mask
depends on the scores). The block mask is a per-shape
constant (``create_block_mask``, timed on its own as ``mask_s``); the engine compiles with one warm
call on distinct inputs of the case's shape, dtype and grad mode before timing (``setup_s``), and
times under ``torch.compiler.set_stance("fail_on_recompile")``, so nothing timed includes compilation.
"""

from __future__ import annotations

import torch

from harness.core.case import Case
from harness.core.patterns import Pattern
from harness.core.registry import Variant, register

_UNSET = object()


def _mask_mod(pattern: Pattern, q_len: int, kv_len: int, device):
    """FlexAttention's mask_mod on absolute positions: query index i sits at i + (kv_len - q_len)."""
    o, w, causal = kv_len - q_len, pattern.window, pattern.causal
    if pattern.kind == "document":
        doc = pattern.doc_ids(kv_len, device)
        if causal:
            return lambda b, h, qi, kv: (doc[qi + o] == doc[kv]) & (qi + o >= kv)
        return lambda b, h, qi, kv: doc[qi + o] == doc[kv]
    if pattern.kind == "global":
        return lambda b, h, qi, kv: qi + o >= kv

    def window(qi, kv):  # |p - j| <= w (causal: 0 <= p - j <= w)
        if causal:
            return (qi + o >= kv) & (qi + o - kv <= w)
        return (qi + o - kv <= w) & (kv - qi - o <= w)

    if pattern.kind == "dilated":
        d = pattern.stride
        return lambda b, h, qi, kv: window(qi, kv) & ((qi + o - kv) % d == 0)
    if pattern.kind == "sink":
        s = pattern.sinks
        if causal:
            return lambda b, h, qi, kv: window(qi, kv) | ((kv < s) & (qi + o >= kv))
        return lambda b, h, qi, kv: window(qi, kv) | (kv < s)
    if pattern.kind == "bigbird":
        g = pattern.globals
        if causal:
            return lambda b, h, qi, kv: (window(qi, kv) | (kv < g) | (qi + o < g)) & (qi + o >= kv)
        return lambda b, h, qi, kv: window(qi, kv) | (kv < g) | (qi + o < g)
    return lambda b, h, qi, kv: window(qi, kv)


def _block_mask(pattern: Pattern, q_len: int, kv_len: int, device):
    if pattern.kind == "global" and not pattern.causal:
        return None
    from torch.nn.attention.flex_attention import (
        create_block_mask,  # lazy: may be absent (a reason)
    )

    return create_block_mask(_mask_mod(pattern, q_len, kv_len, device), None, None, q_len, kv_len, device=device)


@register
class Flex(Variant):
    name = "flex"
    description = "FlexAttention under torch.compile, block masks for causal, local, sink, dilated, bigbird, document"
    patterns = ("global", "local", "sink", "dilated", "bigbird", "document")
    gqa = True
    decode = True
    compiles = True

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._compiled = None

    def not_supported_reasons(self, case: Case) -> list[str]:
        reasons = super().not_supported_reasons(case)
        try:
            import torch.nn.attention.flex_attention  # noqa: F401
        except ImportError as exc:
            reasons.append(f"torch {torch.__version__} has no flex_attention: {exc}")
        if case.device == "cpu" and case.pass_ == "fwd_bwd":
            # torch's own check (flex_attention._validate_device) refuses this; say so before trying
            reasons.append("pass=fwd_bwd: FlexAttention does not support backward on CPU "
                           f"(torch {torch.__version__}); use device=cuda or pass=fwd")
        return reasons

    def constants(self, case: Case) -> dict:
        return {"block_mask": _block_mask(case.pattern_obj, case.q_len, case.seq_len, case.device)}

    def timing_context(self, case: Case):
        # Each shape, mask and grad mode is its own compiled graph. Past dynamo's default limit of 8,
        # flex_attention silently falls back to an unfused eager path that materializes N x N scores,
        # which would be timed as if it were FlexAttention: raise the limit, and fail loudly if hit.
        return torch._dynamo.config.patch(recompile_limit=512, accumulated_recompile_limit=4096,
                                          fail_on_recompile_limit_hit=True)

    def _fn(self):
        if self._compiled is None:
            from torch.nn.attention.flex_attention import flex_attention

            # Static shapes: each shape gets its own kernel. Symbolic lengths (dynamic=True) would
            # compile once per mask, but the kernel they give ran 8-23% slower on a CPU (N 1K-16K).
            self._compiled = torch.compile(flex_attention, dynamic=False)
        return self._compiled

    def forward(self, q, k, v, pattern: Pattern, block_mask=_UNSET) -> torch.Tensor:
        if block_mask is _UNSET:
            block_mask = _block_mask(pattern, q.shape[-2], k.shape[-2], q.device)
        return self._fn()(q, k, v, block_mask=block_mask, enable_gqa=k.shape[1] != q.shape[1])
