"""xformers: xformers.ops.memory_efficient_attention with xformers' own attention-bias classes.

Global (``LowerTriangularMask`` when causal) and local (``LocalAttentionFromBottomRightMask``).
xformers is imported lazily with its logger silenced; when it cannot run a case, the reasons are
the ones xformers' dispatcher gives for every operator it tried (plus any load-time warning).
"""

from __future__ import annotations

import functools
import logging

import torch

from harness.core.case import Case
from harness.core.patterns import Pattern
from harness.core.registry import Variant, register

_UNSET = object()


@functools.lru_cache(maxsize=1)
def _load_xformers():
    """Import xformers quietly. Returns (fmha module or None, [load-time messages])."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage().replace("WARNING[XFORMERS]: ", "").strip())

    logger = logging.getLogger("xformers")
    handler, old_propagate = _Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        from xformers.ops import fmha
    except Exception as exc:  # ImportError, or a broken build raising anything at import
        return None, [f"xformers cannot be imported: {type(exc).__name__}: {exc}"]
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate
    return fmha, [" ".join(ln.strip() for ln in m.splitlines() if ln.strip()) for m in messages if m]


def _dispatcher_reasons(message: str) -> list[str]:
    """Turn xformers' "No operator found" message into one "op: reason" line per refusal."""
    reasons, op = [], None
    for line in message.splitlines():
        text = line.strip()
        if text.startswith("`") and text.endswith("is not supported because:"):
            op = text.split("`")[1]
        elif op is not None and line.startswith("    ") and text:
            reasons.append(f"xformers {op}: {text}")
    return reasons or [message.strip()]


def _bias(fmha, pattern: Pattern):
    if pattern.kind == "local":
        return fmha.attn_bias.LocalAttentionFromBottomRightMask(
            window_left=pattern.window, window_right=0 if pattern.causal else pattern.window)
    return fmha.attn_bias.LowerTriangularMask() if pattern.causal else None


@register
class XFormers(Variant):
    name = "xformers"
    description = "xformers.ops.memory_efficient_attention with xformers' attention-bias classes"
    patterns = ("global", "local")

    def not_supported_reasons(self, case: Case) -> list[str]:
        reasons = super().not_supported_reasons(case)
        if any(r.startswith("pattern=") for r in reasons):
            return reasons
        fmha, load_msgs = _load_xformers()
        if fmha is None:
            return reasons + load_msgs
        if case.device == "cuda" and not torch.cuda.is_available():
            return reasons
        b, h, n, d = case.shape
        small = torch.empty(b, min(n, 128), h, d, dtype=case.torch_dtype, device=case.device)  # (B, N, H, D)
        inp = fmha.Inputs(query=small, key=small, value=small, attn_bias=_bias(fmha, case.pattern_obj))
        try:
            from xformers.ops.fmha import dispatch

            dispatch._dispatch_fw(inp, case.pass_ == "fwd_bwd")
            if case.pass_ == "fwd_bwd":
                dispatch._dispatch_bw(inp, varlen_lse_packed=None)
        except NotImplementedError as exc:
            reasons += load_msgs + _dispatcher_reasons(str(exc))
        return list(dict.fromkeys(reasons))

    def constants(self, case: Case) -> dict:
        fmha, _ = _load_xformers()
        return {"attn_bias": _bias(fmha, case.pattern_obj)}

    def forward(self, q, k, v, pattern: Pattern, attn_bias=_UNSET) -> torch.Tensor:
        fmha, _ = _load_xformers()
        if attn_bias is _UNSET:
            attn_bias = _bias(fmha, pattern)
        # xformers wants (B, N, H, D); transposes are views
        out = fmha.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              attn_bias=attn_bias)  # (B, N, H, D)
        return out.transpose(1, 2)  # (B, H, N, D)
