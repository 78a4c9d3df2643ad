"""Shared by local, hierarchical and chunked: torch's fused CPU flash-attention kernel on one block of
the pattern, and the log-sum-exp merge of partial results.

``torch.ops.aten._scaled_dot_product_flash_attention_for_cpu`` (the kernel behind SDPA's FLASH
backend on CPU) takes q (B, H, Q, D) and k, v (B, H, K, D) of any strides whose last dimension is
contiguous (so overlapping windows of one key tensor can be passed as a strided view), an optional
additive mask of q's dtype broadcastable to (B, H, Q, K), and returns the output and the row
log-sum-exp (float32). Its backward takes the *final* output and log-sum-exp of the rows, so the
gradients of a block computed on its own sum to the gradients of the whole pattern.

Two properties of the kernel the callers rely on (checked by tests/bench/test_variant_kernels.py):
a row whose mask allows no key comes back as output 0 with log-sum-exp 0 (not -inf), so callers
set such rows' log-sum-exp to -inf themselves; and it exists on CPU only, so every caller keeps a
plain-torch path for other devices (``use_flash`` decides).
"""

from __future__ import annotations

import torch

from harness.core.errors import InputError

_FWD = "_scaled_dot_product_flash_attention_for_cpu"
_BWD = "_scaled_dot_product_flash_attention_for_cpu_backward"


def use_flash(device: torch.device, kernel: str) -> bool:
    """The fused CPU kernel for ``kernel="auto"`` on CPU or ``"flash"``; the plain-torch path otherwise."""
    if kernel not in ("auto", "flash", "torch"):
        raise ValueError(f"kernel must be 'auto', 'flash' or 'torch', got {kernel!r}; hint: kernel='auto'")
    if kernel == "torch":
        return False
    available = device.type == "cpu" and hasattr(torch.ops.aten, _FWD) and hasattr(torch.ops.aten, _BWD)
    if kernel == "flash" and not available:
        raise ValueError(f"kernel='flash' needs torch's CPU flash-attention kernel, not available on {device} "
                         f"(torch {torch.__version__}); hint: kernel='auto'")
    return available


KERNELS = ("auto", "flash", "torch")


def check_kernel(variant: str, value) -> None:
    """The ``kernel`` parameter of a variant built on this module: one of ``KERNELS``, else an InputError."""
    if value not in KERNELS:
        raise InputError(f"variant {variant!r}: parameter kernel must be 'auto', 'flash' or 'torch', got {value!r}; "
                         "hint: kernel = 'auto' (flash on CPU, torch elsewhere)")


def flash_kernel_reasons(device: str, kernel: str) -> list[str]:
    """Why ``kernel`` cannot run on ``device`` (empty: it can)."""
    if kernel not in ("auto", "flash", "torch"):
        return [f"kernel={kernel!r} (valid: auto, flash, torch)"]
    if kernel == "flash" and (device != "cpu" or not hasattr(torch.ops.aten, _FWD)):
        return [f"kernel=flash: torch's fused flash kernel runs on CPU only (torch {torch.__version__}); "
                "use kernel=auto or kernel=torch"]
    return []


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean allowed pairs -> the kernel's additive mask (0 where allowed, -inf elsewhere)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def flash_fwd(q, k, v, scale: float, mask: torch.Tensor | None = None, causal: bool = False):
    """(out (B, H, Q, D), lse (B, H, Q) float32) of q against k, v; ``causal`` is top-left aligned."""
    return getattr(torch.ops.aten, _FWD)(q, k, v, 0.0, causal, attn_mask=mask, scale=scale)


def flash_bwd(grad_out, q, k, v, out, lse, scale: float, mask: torch.Tensor | None = None, causal: bool = False):
    """(dq, dk, dv) of one block, given the rows' final ``out`` and ``lse``."""
    return getattr(torch.ops.aten, _BWD)(grad_out, q, k, v, out, lse, 0.0, causal, attn_mask=mask, scale=scale)


def merge(acc: torch.Tensor | None, acc_lse: torch.Tensor | None, out: torch.Tensor, lse: torch.Tensor):
    """Log-sum-exp merge of two partial results over disjoint key sets: (out, lse) of their union.

    ``acc`` and ``out`` are (..., Q, D), ``acc_lse`` and ``lse`` (..., Q) float32; a row with no key in
    one part has lse -inf there. Returns float32 accumulators."""
    if acc is None:
        return out.float(), lse
    new = torch.logaddexp(acc_lse, lse)  # (..., Q)
    safe = new.masked_fill(torch.isneginf(new), 0.0)  # rows with no key in either part: weights exp(-inf) = 0
    acc = acc.mul_((acc_lse - safe).exp_()[..., None]).add_(out.float() * (lse - safe).exp_()[..., None])
    return acc, new


def slots(b: int, h: int, h_kv: int) -> list[tuple[int, int, int, int | None]]:
    """(batch, first query head, query heads, kv head or None) of each call that puts something else
    than heads in the kernel's head dimension. Multi-head: all heads at once (kv head None: the same
    heads); grouped: one kv head, viewed with stride 0 under its group of query heads."""
    g = h // h_kv
    if g == 1:
        return [(i, 0, h, None) for i in range(b)]
    return [(i, j * g, g, j) for i in range(b) for j in range(h_kv)]


def row_blocks(x: torch.Tensor, i: int, h0: int, nh: int, row0: int, nblk: int, length: int, every: int,
               shared_head: int | None = None) -> torch.Tensor:
    """(nh, nblk, length, D) view of x (B, H, N, D) at batch i, heads h0.., without a copy: block t holds
    rows row0 + t * every .. + length (overlapping when every < length). ``shared_head``: that one head,
    stride 0 over nh (a kv head under its group of query heads)."""
    sb, sh, sn, sd = x.stride()
    head, head_stride = (h0, sh) if shared_head is None else (shared_head, 0)
    return x.as_strided((nh, nblk, length, x.shape[3]), (head_stride, every * sn, sn, sd),
                        x.storage_offset() + i * sb + head * sh + row0 * sn)
