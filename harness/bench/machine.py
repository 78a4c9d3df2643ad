"""Machine figures: the matmul ceiling every row's achieved FLOP/s is compared with."""

from __future__ import annotations

import torch

from harness.bench.timing import time_callable
from harness.core.names import BANDWIDTH_KEY  # noqa: F401  (re-exported)


def matmul_flops_per_s(device: str, dtype: torch.dtype, budget_s: float = 0.5) -> float:
    """Achievable matmul FLOP/s for ``dtype`` on ``device``: the ceiling rows are compared with."""
    n = 2048 if device == "cuda" else 1024
    a = torch.randn(n, n).to(device, dtype)
    b = torch.randn(n, n).to(device, dtype)
    timing = time_callable(lambda: a @ b, device, budget_s, warmup=2)
    return 2.0 * n**3 / timing.median


def copy_bytes_per_s(device: str, budget_s: float = 0.5, size_bytes: int | None = None) -> float:
    """Achievable memory bandwidth on ``device``: a large float32 copy, counting read and write.

    The roof a memory-bound call (decoding) is judged against; 256 MiB on CPU (well past the caches),
    1 GiB on CUDA."""
    size = size_bytes or (2**30 if device == "cuda" else 2**28)
    src = torch.ones(size // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    timing = time_callable(lambda: dst.copy_(src), device, budget_s, warmup=2)
    return 2.0 * size / timing.median
