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
from harness.core.errors import one_line
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
        return None, [f"xformers cannot be imported: {one_line(exc)}"]
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


def _bias(fmha, pattern: Pattern, q_len: int, kv_len: int):
    """xformers' bias for the pattern, bottom-right aligned (queries at the end of the keys)."""
    ab = fmha.attn_bias
    if pattern.kind == "local":
        return ab.LocalAttentionFromBottomRightMask(window_left=pattern.window,
                                                    window_right=0 if pattern.causal else pattern.window)
    if pattern.kind == "document":  # square, batch 1: documents packed in one row (checked in the reasons)
        lens = list(pattern.doc_lens)
        cls = ab.BlockDiagonalCausalMask if pattern.causal else ab.BlockDiagonalMask
        return cls.from_seqlens(lens)
    if not pattern.causal:
        return None
    return ab.LowerTriangularMask() if q_len == kv_len else ab.LowerTriangularFromBottomRightMask()


def _layout(q, k, v):
    """(B, H, N, D) tensors as xformers' views: BMHK, or BMGHK (G = kv heads) for grouped-query heads."""
    b, h, q_len, d = q.shape
    h_kv, kv_len = k.shape[1], k.shape[2]
    if h_kv == h:
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, N, H, D) views
    g = h // h_kv
    qx = q.transpose(1, 2).reshape(b, q_len, h_kv, g, d)  # (B, Q, Hkv, g, D)
    kx = k.transpose(1, 2)[:, :, :, None].expand(b, kv_len, h_kv, g, d)  # (B, K, Hkv, g, D), a view
    vx = v.transpose(1, 2)[:, :, :, None].expand(b, kv_len, h_kv, g, d)
    return qx, kx, vx


@register
class XFormers(Variant):
    name = "xformers"
    description = "xformers.ops.memory_efficient_attention with xformers' attention-bias classes"
    patterns = ("global", "local", "document")
    gqa = True
    decode = True

    def not_supported_reasons(self, case: Case) -> list[str]:
        reasons = super().not_supported_reasons(case)
        if case.pattern == "document" and (case.batch != 1 or case.q_len != case.seq_len):
            reasons.append(f"pattern=document needs batch=1 and q_len=kv_len here (got batch={case.batch}, "
                           f"q_len={case.q_len}, kv_len={case.seq_len}): attnbench passes "
                           "documents as xformers' block-diagonal masks, which pack them in one row (batch 1, square)")
        if any(r.startswith("pattern=") for r in reasons):
            return reasons
        fmha, load_msgs = _load_xformers()
        if fmha is None:
            return reasons + load_msgs
        if case.device == "cuda" and not torch.cuda.is_available():
            return reasons
        b, h, q_len, d = case.shape
        small_q, small_kv = min(q_len, 128), min(case.seq_len, 128)
        pattern = case.pattern_obj
        if pattern.kind == "document":  # the dispatcher checks the bias type, not the lengths
            small_q = small_kv = min(case.seq_len, 128)
            pattern = Pattern("document", pattern.causal, doc_lens=(small_kv,))
        q = torch.empty(b, h, small_q, d, dtype=case.torch_dtype, device=case.device)
        kv = torch.empty(b, case.kv_heads, small_kv, d, dtype=case.torch_dtype, device=case.device)
        qx, kx, vx = _layout(q, kv, kv)
        inp = fmha.Inputs(query=qx, key=kx, value=vx, attn_bias=_bias(fmha, pattern, small_q, small_kv))
        try:
            from xformers.ops.fmha import dispatch

            dispatch._dispatch_fw(inp, case.pass_ == "fwd_bwd")
            if case.pass_ == "fwd_bwd":
                dispatch._dispatch_bw(inp, varlen_lse_packed=None)
        except NotImplementedError as exc:
            reasons += load_msgs + _dispatcher_reasons(str(exc))
        except Exception as exc:  # a bias or layout xformers refuses for these inputs is a reason too
            reasons += load_msgs + [f"xformers refused these inputs: {one_line(exc)}"]
        return list(dict.fromkeys(reasons))

    def constants(self, case: Case) -> dict:
        fmha, _ = _load_xformers()
        return {"attn_bias": _bias(fmha, case.pattern_obj, case.q_len, case.seq_len)}

    def forward(self, q, k, v, pattern: Pattern, attn_bias=_UNSET) -> torch.Tensor:
        fmha, _ = _load_xformers()
        if attn_bias is _UNSET:
            attn_bias = _bias(fmha, pattern, q.shape[-2], k.shape[-2])
        out = fmha.memory_efficient_attention(*_layout(q, k, v), attn_bias=attn_bias)  # (B, Q, H[kv, g], D)
        return out.reshape(q.shape[0], q.shape[2], q.shape[1], q.shape[3]).transpose(1, 2)  # (B, H, Q, D)
