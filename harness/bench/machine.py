"""Machine figures: the matmul ceiling every row's achieved FLOP/s is compared with."""

from __future__ import annotations

import torch

from harness.bench.timing import time_callable


def matmul_flops_per_s(device: str, dtype: torch.dtype, budget_s: float = 0.5) -> float:
    """Achievable matmul FLOP/s for ``dtype`` on ``device``: the ceiling rows are compared with."""
    n = 2048 if device == "cuda" else 1024
    a = torch.randn(n, n).to(device, dtype)
    b = torch.randn(n, n).to(device, dtype)
    timing = time_callable(lambda: a @ b, device, budget_s, warmup=2)
    return 2.0 * n**3 / timing.median
