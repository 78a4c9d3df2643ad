"""Prepare a case once, then time only the kernel.

``prepare`` does everything that is not the kernel, outside any timed region: the variant's
reasons (refused with UnsupportedCaseError), its per-shape constants (masks, block masks, biases;
timed as ``mask_s``, their bytes as ``mask_mem_bytes``), and for compiling variants one warm call on
distinct inputs of the case's shape, dtype and grad mode (timed within ``setup_s``). It returns the
zero-argument callable to time, which calls ``Variant.forward`` directly, and the context to enter
once around all timed calls (the variant's own, ``torch.no_grad`` for ``fwd``, and for compiling
variants ``torch.compiler.set_stance("fail_on_recompile")``, so a recompilation while timing is an
error, never a silent cost).
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from harness.bench.inputs import Inputs, make_inputs
from harness.bench.memory import track_allocations
from harness.bench.timing import sync
from harness.core.case import Case
from harness.core.errors import WrongOutput
from harness.core.registry import Variant

WARM_SEED = 12345  # the compile call's inputs differ from the timed ones (no aliasing, no reuse)


@dataclass
class Prepared:
    case: Case
    fn: Callable[[], Any]  # the timed call: the kernel and, for fwd_bwd, its backward
    kernel: Callable[..., torch.Tensor]  # kernel(q, k, v) -> out, constants bound
    inputs: Inputs
    context: Callable[[], contextlib.AbstractContextManager]  # enter once around timed calls
    setup_s: float  # all of preparation: constants, compilation
    mask_s: float  # building the per-shape constants alone
    mask_mem_bytes: int  # what the constants hold

    def run(self) -> Any:
        """One call of ``fn`` inside the context (for callers that time nothing)."""
        with self.context():
            return self.fn()


def timed_call(kernel: Callable[..., torch.Tensor], case: Case, inputs: Inputs) -> Callable[[], Any]:
    """The zero-argument callable to time: forward, or forward and ``autograd.grad`` of q, k, v."""
    q, k, v = inputs.qkv()
    if case.pass_ == "fwd":
        return functools.partial(kernel, q, k, v)
    grad = inputs.grad_out

    def fwd_bwd():
        out = kernel(q, k, v)
        if getattr(out, "shape", None) != grad.shape:  # else torch's own broadcasting message
            raise WrongOutput(f"returned {_shape_text(out)}, expected shape {tuple(grad.shape)}")
        return torch.autograd.grad(out, (q, k, v), grad)
    return fwd_bwd


def _shape_text(out) -> str:
    return f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__


def prepare(variant: Variant, case: Case, inputs: Inputs | None = None) -> Prepared:
    """Validate, build constants, compile (see the module docstring); nothing here is timed as the kernel."""
    variant.check_supported(case)
    t0 = time.perf_counter()
    alloc = track_allocations(lambda: variant.constants(case), case.device)
    sync(case.device)
    mask_s = time.perf_counter() - t0
    kernel = functools.partial(variant.forward, pattern=case.pattern_obj, **alloc.result)

    def context() -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(variant.timing_context(case))
        if case.pass_ == "fwd":
            stack.enter_context(torch.no_grad())
        if variant.compiles:
            stack.enter_context(torch.compiler.set_stance("fail_on_recompile"))
        return stack

    if variant.compiles:  # compile now, on distinct inputs of the same shape, dtype and grad mode
        warm = make_inputs(case, seed=WARM_SEED)
        with variant.timing_context(case), torch.set_grad_enabled(case.pass_ == "fwd_bwd"):
            timed_call(kernel, case, warm)()
        sync(case.device)
        del warm
    setup_s = time.perf_counter() - t0
    inputs = inputs if inputs is not None else make_inputs(case)
    return Prepared(case=case, fn=timed_call(kernel, case, inputs), kernel=kernel, inputs=inputs, context=context,
                    setup_s=setup_s, mask_s=mask_s, mask_mem_bytes=alloc.net_bytes)
