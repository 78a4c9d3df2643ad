"""sdpa: torch.nn.functional.scaled_dot_product_attention, one registered variant per backend.

Square global attention uses ``is_causal``; local, sink, dilated, bigbird, document and bottom-right
causal (q_len < kv_len) attention pass a boolean mask built once per case; grouped-query heads use
``enable_gqa``. Each backend is pinned with ``torch.nn.attention.sdpa_kernel`` so a case never
silently falls back to another one. On CUDA, torch's own checks
(``torch.backends.cuda.can_use_*_attention`` with debug=True) supply the reasons; on CPU the reasons
are the ones torch's CPU dispatcher applies (only math and flash exist).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from harness.core.case import Case
from harness.core.patterns import Pattern
from harness.core.registry import Variant, register

_UNSET = object()


def _needs_mask(pattern: Pattern, q_len: int, kv_len: int) -> bool:
    """SDPA's is_causal aligns top-left; every pattern but square global needs an explicit mask."""
    return pattern.kind != "global" or (pattern.causal and q_len != kv_len)


class _SDPA(Variant):
    backend: SDPBackend = SDPBackend.MATH
    patterns = ("global", "local", "sink", "dilated", "bigbird", "document")
    gqa = True
    decode = True
    cpu_ok = True  # does torch have a CPU kernel for this backend?

    def not_supported_reasons(self, case: Case) -> list[str]:
        reasons = super().not_supported_reasons(case)
        if case.device == "cpu" and not self.cpu_ok:
            reasons.append(f"SDPA backend {self.backend.name} has no CPU kernel in torch {torch.__version__}")
        if case.device == "cuda" and torch.cuda.is_available() and not reasons:
            reasons += _cuda_backend_reasons(self.backend, case)
        return reasons

    def constants(self, case: Case) -> dict:
        """The boolean mask (True = may attend) of every pattern but square global, built once per shape."""
        if not _needs_mask(case.pattern_obj, case.q_len, case.seq_len):
            return {"attn_mask": None}
        return {"attn_mask": case.pattern_obj.mask(case.q_len, case.seq_len, case.device)}

    def timing_context(self, case: Case):
        return sdpa_kernel(self.backend)  # pinned: never a silent fallback to another backend

    def forward(self, q, k, v, pattern: Pattern, attn_mask=_UNSET) -> torch.Tensor:
        q_len, kv_len = q.shape[-2], k.shape[-2]
        if attn_mask is _UNSET:
            attn_mask = pattern.mask(q_len, kv_len, q.device) if _needs_mask(pattern, q_len, kv_len) else None
        is_causal = pattern.causal and attn_mask is None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                              enable_gqa=k.shape[1] != q.shape[1])


def _cuda_backend_reasons(backend: SDPBackend, case: Case) -> list[str]:
    """Ask torch whether ``backend`` can run ``case`` on CUDA; its debug warnings are the reasons."""
    check = {
        SDPBackend.FLASH_ATTENTION: torch.backends.cuda.can_use_flash_attention,
        SDPBackend.EFFICIENT_ATTENTION: torch.backends.cuda.can_use_efficient_attention,
        SDPBackend.CUDNN_ATTENTION: getattr(torch.backends.cuda, "can_use_cudnn_attention", None),
    }.get(backend)
    if check is None:
        return []
    b, h, q_len, d = case.shape
    small_q, small_kv = min(q_len, 128), min(case.seq_len, 128)  # the checks depend on layout, dtype, head dim
    q = torch.empty(b, h, small_q, d, dtype=case.torch_dtype, device="cuda")
    kv = torch.empty(b, case.kv_heads, small_kv, d, dtype=case.torch_dtype, device="cuda")
    mask = None
    if _needs_mask(case.pattern_obj, q_len, case.seq_len):
        mask = torch.ones(small_q, small_kv, dtype=torch.bool, device="cuda")
    params = torch.backends.cuda.SDPAParams(q, kv, kv, mask, 0.0, case.causal and mask is None,
                                            case.kv_heads != case.heads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = check(params, True)
    if ok:
        return []
    msgs = [str(w.message).strip() for w in caught if str(w.message).strip()]
    return msgs or [f"torch.backends.cuda.{check.__name__} refused these inputs (torch gave no detail)"]


@register
class SDPAMath(_SDPA):
    name = "sdpa_math"
    description = "PyTorch SDPA, math backend (reference composite kernel)"
    backend = SDPBackend.MATH


@register
class SDPAFlash(_SDPA):
    name = "sdpa_flash"
    description = "PyTorch SDPA, FlashAttention backend (CPU flash kernel or FlashAttention-2 on CUDA)"
    backend = SDPBackend.FLASH_ATTENTION


@register
class SDPAEfficient(_SDPA):
    name = "sdpa_efficient"
    description = "PyTorch SDPA, memory-efficient backend (xformers-derived CUDA kernel)"
    backend = SDPBackend.EFFICIENT_ATTENTION
    cpu_ok = False


@register
class SDPACudnn(_SDPA):
    name = "sdpa_cudnn"
    description = "PyTorch SDPA, cuDNN backend"
    backend = SDPBackend.CUDNN_ATTENTION
    cpu_ok = False
