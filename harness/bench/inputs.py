"""The one input builder: seeded random q, k, v (never zeros) and the upstream gradient.

Every caller (sweeps, ``attnbench check``, the asv and pytest-benchmark suites, the CI gate's
worker) builds its tensors here. ``layout="transposed"`` gives (B, H, N, D) views of (B, N, H, D)
storage, the non-contiguous inputs ``check`` holds every variant to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.core.case import Case

LAYOUTS = ("contiguous", "transposed")


@dataclass
class Inputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    grad_out: torch.Tensor | None = None  # set when the inputs require grad

    def qkv(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.q, self.k, self.v


def make_qkv(shape: tuple[int, int, int, int], dtype: torch.dtype, device: str, seed: int = 0,
             requires_grad: bool = False, layout: str = "contiguous", grad_out: bool = False,
             kv_shape: tuple[int, int, int, int] | None = None) -> Inputs:
    """q of ``shape`` (B, H, q_len, D) and k, v of ``kv_shape`` (B, H_kv, kv_len, D; default: q's),
    drawn on the CPU from one seeded generator, then moved."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for i in range(3):
        b, h, n, d = shape if i == 0 or kv_shape is None else kv_shape
        if layout == "contiguous":
            t = torch.randn(b, h, n, d, generator=gen).to(device=device, dtype=dtype)
        else:
            t = torch.randn(b, n, h, d, generator=gen).to(device=device, dtype=dtype).transpose(1, 2)  # (B, H, N, D) view
            if t.is_contiguous():  # H == 1 or N == 1: force a strided layout all the same
                t = t.transpose(1, 2).contiguous().transpose(1, 2)
        tensors.append(t.requires_grad_(requires_grad) if requires_grad else t)
    grad = torch.randn(*shape, generator=gen).to(device=device, dtype=dtype) if grad_out else None
    return Inputs(*tensors, grad_out=grad)


def make_inputs(case: Case, seed: int = 0, layout: str = "contiguous") -> Inputs:
    """The inputs of ``case``: with grad and an upstream gradient for ``fwd_bwd``."""
    backward = case.pass_ == "fwd_bwd"
    return make_qkv(case.shape, case.torch_dtype, case.device, seed, requires_grad=backward, layout=layout,
                    grad_out=backward, kv_shape=case.kv_shape)
