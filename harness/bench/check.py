"""Correctness against the float64 references, on awkward shapes. Used by `attnbench check` and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.bench.inputs import make_qkv
from harness.bench.prepare import prepare
from harness.core.case import DTYPES, Case
from harness.core.patterns import Pattern
from harness.core.reference import reference, reference_with_grads, relative_error
from harness.core.registry import Variant, discover

# Relative error bounds ||out - ref|| / ||ref||: (forward, gradients) per dtype.
TOLERANCES = {"float32": (1e-5, 1e-4), "float64": (1e-10, 1e-9), "float16": (2e-2, 2e-2), "bfloat16": (2e-2, 2e-2)}


# Small block and chunk sizes so that lengths below are not multiples of them.
CHECK_PARAMS = {"chunked": {"chunk_q": 32, "chunk_k": 16}, "local": {"block": 16}}


@dataclass(frozen=True)
class Shape:
    batch: int
    heads: int
    seq_len: int
    head_dim: int
    window: int = 16
    segment: int = 9
    contiguous: bool = True

    @property
    def label(self) -> str:
        return (f"B={self.batch} H={self.heads} N={self.seq_len} D={self.head_dim} w={self.window} "
                f"s={self.segment}{'' if self.contiguous else ' non-contiguous'}")


CHECK_SHAPES = (
    Shape(1, 1, 1, 64),                        # N = 1
    Shape(1, 2, 10, 64),                       # N smaller than window, segment, block and chunk
    Shape(3, 4, 100, 80),                      # batch 3, odd head dim, N not a multiple of anything
    Shape(2, 3, 67, 64, contiguous=False),     # transposed views
)


def pattern_for(kind: str, causal: bool, shape: Shape) -> Pattern:
    return Pattern(kind, causal, window=shape.window if kind == "local" else None,
                   segment=shape.segment if kind == "hierarchical" else None)


@dataclass
class CheckResult:
    variant: str
    pattern: str
    shape: Shape
    dtype: str
    device: str
    pass_: str
    errors: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    tolerance: tuple[float, float] = (0.0, 0.0)

    @property
    def skipped(self) -> bool:
        return bool(self.reasons)

    @property
    def ok(self) -> bool:
        fwd_tol, grad_tol = self.tolerance
        return all(err <= (fwd_tol if name == "out" else grad_tol) for name, err in self.errors.items())

    def describe(self) -> str:
        errs = ", ".join(f"{k}={v:.2e}" for k, v in self.errors.items())
        return (f"{self.variant} {self.pattern} {self.device}/{self.dtype} {self.pass_} [{self.shape.label}]: "
                f"{errs} (tolerance fwd {self.tolerance[0]:g}, grad {self.tolerance[1]:g})")


def check_one(variant: Variant, kind: str, causal: bool, shape: Shape, dtype: str = "float32",
              device: str = "cpu", pass_: str = "fwd") -> CheckResult:
    pattern = pattern_for(kind, causal, shape)
    res = CheckResult(variant.name, pattern.label, shape, dtype, device, pass_, tolerance=TOLERANCES[dtype])
    case = Case(variant=variant.name, pattern=kind, causal=causal, window=pattern.window, segment=pattern.segment,
                device=device, dtype=dtype, batch=shape.batch, heads=shape.heads, seq_len=shape.seq_len,
                head_dim=shape.head_dim, pass_=pass_, params=tuple(variant.params.items()))
    res.reasons = variant.not_supported_reasons(case)
    if res.reasons:
        return res
    backward = pass_ == "fwd_bwd"
    inputs = make_qkv(case.shape, DTYPES[dtype], device, requires_grad=backward,
                      layout="contiguous" if shape.contiguous else "transposed")
    q, k, v = inputs.qkv()
    prepared = prepare(variant, case, inputs)  # the path sweeps time: constants bound, forward called directly
    with variant.timing_context(case), torch.set_grad_enabled(backward):
        out = prepared.kernel(q, k, v)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    if backward:
        ref, ref_grads = reference_with_grads(q, k, v, pattern, grad_out)
        out.backward(grad_out)
        res.errors["out"] = relative_error(out, ref)
        for name, t, g in zip(("dq", "dk", "dv"), (q, k, v), ref_grads):
            res.errors[name] = relative_error(t.grad, g)
    else:
        with torch.no_grad():
            res.errors["out"] = relative_error(out, reference(q, k, v, pattern))
    return res


def default_dtypes(device: str) -> list[str]:
    return ["float32"] if device == "cpu" else ["float32", "float16", "bfloat16"]


def run_check(device: str = "cpu", variants: list[str] | None = None, dtypes: list[str] | None = None,
              shapes=CHECK_SHAPES, on_result=None) -> list[CheckResult]:
    """Every variant x declared pattern x causal x shape x dtype x pass; ``on_result`` sees each result."""
    registry = discover()
    results = []
    for name in variants or list(registry):
        variant = registry[name](**CHECK_PARAMS.get(name, {}))
        for kind in variant.patterns:
            for causal in (False, True):
                for shape in shapes:
                    for dtype in dtypes or default_dtypes(device):
                        for pass_ in ("fwd", "fwd_bwd") if variant.backward else ("fwd",):
                            res = check_one(variant, kind, causal, shape, dtype, device, pass_)
                            results.append(res)
                            if on_result:
                                on_result(res)
    return results
