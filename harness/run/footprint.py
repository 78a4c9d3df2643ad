"""A case's memory footprint, known before anything is allocated: a case that cannot fit is an
``oom`` row at once, with the figures."""

from __future__ import annotations

import torch

from harness.bench.heap import free_heap_bytes
from harness.core.case import Case


def footprint_bytes(case: Case) -> int:
    """A lower bound, closed form, on the bytes a case holds on its device: q, k, v and the output, plus
    for fwd_bwd the upstream gradient and dq, dk, dv. Whatever the variant needs comes on top."""
    tensors = 8 if case.pass_ == "fwd_bwd" else 4
    return tensors * case.batch * case.heads * case.seq_len * case.head_dim * case.torch_dtype.itemsize


def available_bytes(device: str) -> int:
    """Bytes that can be allocated now: on CPU, host memory available (psutil) plus what glibc's heap holds
    free (a steady allocator keeps freed memory: harness.bench.heap); on CUDA, free device memory plus
    what torch's caching allocator holds unused."""
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    import psutil  # lazy: only sweeps need it

    return psutil.virtual_memory().available + free_heap_bytes()


def memory_shortfall(case: Case) -> str | None:
    """The reason a case cannot fit in its device's memory, with the figures, or None if it may fit."""
    need = footprint_bytes(case)
    have = available_bytes(case.device)
    if need <= have:
        return None
    gib = 2**30
    what = "q, k, v, the output and their gradients" if case.pass_ == "fwd_bwd" else "q, k, v and the output"
    return (f"not attempted: {what} alone need {need} bytes ({need / gib:.1f} GiB), more than the {have} bytes "
            f"({have / gib:.1f} GiB) available on {case.device}")
