"""sdpa: torch.nn.functional.scaled_dot_product_attention, one registered variant per backend.

Global attention uses ``is_causal``; local attention passes a boolean band mask. Each backend is
pinned with ``torch.nn.attention.sdpa_kernel`` so a case never silently falls back to another one.
On CUDA, torch's own checks (``torch.backends.cuda.can_use_*_attention`` with debug=True) supply the
reasons; on CPU the reasons are the ones torch's CPU dispatcher applies (only math and flash exist).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from harness.core.case import Case
from harness.core.patterns import Pattern
from harness.core.registry import Variant, register


class _SDPA(Variant):
    backend: SDPBackend = SDPBackend.MATH
    patterns = ("global", "local")
    cpu_ok = True  # does torch have a CPU kernel for this backend?

    def not_supported_reasons(self, case: Case) -> list[str]:
        reasons = super().not_supported_reasons(case)
        if case.device == "cpu" and not self.cpu_ok:
            reasons.append(f"SDPA backend {self.backend.name} has no CPU kernel in torch {torch.__version__}")
        if case.device == "cuda" and torch.cuda.is_available() and not reasons:
            reasons += _cuda_backend_reasons(self.backend, case)
        return reasons

    def constants(self, case: Case) -> dict:
        """Local attention's (N, N) boolean band (True = may attend), built once per shape."""
        if case.pattern != "local":
            return {}
        return {"attn_mask": case.pattern_obj.mask(case.seq_len, case.device)}

    def timing_context(self, case: Case):
        return sdpa_kernel(self.backend)  # pinned: never a silent fallback to another backend

    def forward(self, q, k, v, pattern: Pattern, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if pattern.kind == "local" and attn_mask is None:
            attn_mask = pattern.mask(q.shape[-2], q.device)
        is_causal = pattern.causal and attn_mask is None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)


def _cuda_backend_reasons(backend: SDPBackend, case: Case) -> list[str]:
    """Ask torch whether ``backend`` can run ``case`` on CUDA; its debug warnings are the reasons."""
    check = {
        SDPBackend.FLASH_ATTENTION: torch.backends.cuda.can_use_flash_attention,
        SDPBackend.EFFICIENT_ATTENTION: torch.backends.cuda.can_use_efficient_attention,
        SDPBackend.CUDNN_ATTENTION: getattr(torch.backends.cuda, "can_use_cudnn_attention", None),
    }.get(backend)
    if check is None:
        return []
    b, h, n, d = case.shape
    small_n = min(n, 128)  # the checks depend on layout, dtype and head dim, not on length
    q = torch.empty(b, h, small_n, d, dtype=case.torch_dtype, device="cuda")
    mask = None
    if case.pattern == "local":
        mask = torch.ones(small_n, small_n, dtype=torch.bool, device="cuda")
    params = torch.backends.cuda.SDPAParams(q, q, q, mask, 0.0, case.causal and case.pattern == "global", False)
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
