"""The one input builder: seeded random q, k, v (never zeros) and the upstream gradient, or the
captured q, k, v of a case's input source (a language model's layer, a user's file).

Every caller (sweeps, ``attnbench check``, the asv and pytest-benchmark suites, the CI gate's
worker) builds its tensors here. ``layout="transposed"`` gives (B, H, N, D) views of (B, N, H, D)
storage, the non-contiguous inputs ``check`` holds every variant to.

A case whose ``inputs`` is not ``random`` is timed on its source's tensors (seed 0, the timed inputs);
other seeds (the compile warm-up, the correctness check's second set of inputs) stay random, so a kernel
is still checked on inputs it has never seen. Sources are loaded once per process by ``use_source``.
"""

from __future__ import annotations

from dataclasses import dataclass

import dataclasses

import torch

from harness.core.case import Case
from harness.core.errors import InputError

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
    """The inputs of ``case``: with grad and an upstream gradient for ``fwd_bwd``; its source's tensors
    for seed 0 when its ``inputs`` are not random."""
    backward = case.pass_ == "fwd_bwd"
    inputs = make_qkv(case.shape, case.torch_dtype, case.device, seed, requires_grad=backward, layout=layout,
                      grad_out=backward, kv_shape=case.kv_shape)
    if case.inputs == "random" or seed != 0:
        return inputs
    q, k, v = source_of(case).qkv(case.inputs_layer, case.seq_len, case.torch_dtype, case.device, batch=case.batch)
    q = q[:, :, case.seq_len - case.q_len:].contiguous()  # (B, H, q_len, D): queries sit at the end of the keys
    tensors = [t.requires_grad_(True) if backward else t for t in (q, k, v)]
    return Inputs(*tensors, grad_out=inputs.grad_out)


_SOURCES: dict = {}  # the input sources loaded in this process, by id and by (spec, layers, length)


def use_source(spec: str, layers: tuple[int, ...] = (), max_len: int | None = None):
    """Load the input source ``spec`` (``harness.sources.load_source``) once per process and make it the
    one cases with its id read from; returns it."""
    key = (spec, tuple(layers), max_len)
    if key not in _SOURCES:
        from harness.sources import load_source  # lazy: only runs with real inputs load gguf or safetensors

        source = load_source(spec, tuple(layers) or None, max_len)
        _SOURCES[key] = _SOURCES[source.id] = source
    return _SOURCES[key]


def source_of(case: Case):
    """The loaded source of ``case.inputs``."""
    try:
        return _SOURCES[case.inputs]
    except KeyError:
        raise InputError(f"inputs {case.inputs!r} are not loaded in this process; hint: a sweep loads them "
                         "from its --inputs (harness.bench.inputs.use_source)") from None


def pattern_perplexity(case: Case) -> float:
    """The perplexity of the case's language model on its text (first ``seq_len`` tokens) with the case's
    pattern, made causal, in every layer (naive attention, float32)."""
    from harness.core.registry import get_variant

    pattern = dataclasses.replace(case.pattern_obj, causal=True)
    naive = get_variant("naive")
    return source_of(case).perplexity(attention=lambda q, k, v, layer: naive.forward(q, k, v, pattern=pattern),
                                      n=case.seq_len)
