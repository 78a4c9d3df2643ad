"""Correctness against the float64 references, on awkward shapes. Used by `attnbench check` and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.bench.verify import inputs_written, output_problem
from harness.bench.inputs import make_qkv
from harness.bench.prepare import prepare
from harness.core.case import DTYPES, Case
from harness.core.errors import one_line
from harness.core.patterns import Pattern
from harness.core.reference import reference, reference_with_grads, relative_error
from harness.core.registry import Variant, discover
from harness.core.tolerances import TOLERANCES

# Small block and chunk sizes so that lengths below are not multiples of them.
CHECK_PARAMS = {"chunked": {"chunk_q": 32, "chunk_k": 16}, "local": {"block": 16}}


@dataclass(frozen=True)
class Shape:
    """``seq_len`` is the key/value length; ``q_len`` (default: seq_len) queries sit at its end;
    ``kv_heads`` (default: heads) are shared by groups of query heads."""

    batch: int
    heads: int
    seq_len: int
    head_dim: int
    window: int = 16
    segment: int = 9
    contiguous: bool = True
    kv_heads: int | None = None
    q_len: int | None = None
    sinks: int = 3
    stride: int = 3
    globals: int = 2
    topk: int = 7

    @property
    def doc_lens(self) -> tuple[int, ...]:
        """Documents of length 1 at both ends and one long one between (one document when N < 4)."""
        n = self.seq_len
        return (1, 1, n - 3, 1) if n >= 4 else (n,)

    @property
    def label(self) -> str:
        kv = f" Hkv={self.kv_heads}" if self.kv_heads not in (None, self.heads) else ""
        q = f" q_len={self.q_len}" if self.q_len not in (None, self.seq_len) else ""
        extra = "".join(f" {name}={getattr(self, name)}" for name in ("sinks", "stride", "globals", "topk")
                        if getattr(self, name) != getattr(Shape, name))  # the new patterns' parameters, if not default
        return (f"B={self.batch} H={self.heads}{kv} N={self.seq_len}{q} D={self.head_dim} w={self.window} "
                f"s={self.segment}{extra}{'' if self.contiguous else ' non-contiguous'}")


CHECK_SHAPES = (
    Shape(1, 1, 1, 64),                        # N = 1
    Shape(1, 2, 10, 64, sinks=12, globals=11, topk=12),  # N smaller than window, segment, block, chunk, sinks...
    Shape(3, 4, 100, 80),                      # batch 3, odd head dim, N not a multiple of anything
    Shape(2, 3, 67, 64, contiguous=False, stride=2),  # transposed views
    Shape(2, 4, 37, 32, kv_heads=1, sinks=6, stride=4),  # multi-query heads
    Shape(1, 8, 300, 128, kv_heads=2, q_len=3, window=400),  # decoding, group 4, window wider than the keys
    Shape(1, 2, 40, 256, q_len=1, globals=5),  # one query against the keys, head dim 256
)


def pattern_for(kind: str, causal: bool, shape: Shape) -> Pattern:
    """The pattern ``kind`` with the parameters ``shape`` gives it (those it does not take are None)."""
    return Pattern(kind, causal, window=shape.window, segment=shape.segment,
                   doc_lens=shape.doc_lens if kind == "document" else None, sinks=shape.sinks, stride=shape.stride,
                   globals=shape.globals, topk=shape.topk)


def case_for(variant: Variant, kind: str, causal: bool, shape: Shape, dtype: str = "float32", device: str = "cpu",
             pass_: str = "fwd") -> Case:
    """The case ``check_one`` holds ``variant`` to for one cell."""
    pattern = pattern_for(kind, causal, shape)
    return Case(variant=variant.name, pattern=kind, causal=causal, window=pattern.window, segment=pattern.segment,
                device=device, dtype=dtype, batch=shape.batch, heads=shape.heads, seq_len=shape.seq_len,
                head_dim=shape.head_dim, pass_=pass_, params=tuple(variant.params.items()),
                kv_heads=shape.kv_heads, q_len=shape.q_len, doc_lens=pattern.doc_lens, sinks=pattern.sinks,
                stride=pattern.stride, globals=pattern.globals, topk=pattern.topk)


@dataclass
class CheckResult:
    variant: str
    pattern: str
    shape: Shape | None  # None: the variant could not even be made
    dtype: str
    device: str
    pass_: str
    errors: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    tolerance: tuple[float, float] = (0.0, 0.0)
    exception: str | None = None  # the variant raised: "<type>: <first line of the message>"
    wrong: str | None = None  # its output is not one (NaN, shape, dtype) or it wrote its inputs: why

    @property
    def skipped(self) -> bool:
        return bool(self.reasons)

    @property
    def ok(self) -> bool:
        if self.exception is not None or self.wrong is not None:
            return False
        fwd_tol, grad_tol = self.tolerance
        return all(err <= (fwd_tol if name == "out" else grad_tol) for name, err in self.errors.items())

    def describe(self) -> str:
        where = (f"{self.variant} {self.pattern} {self.device}/{self.dtype} {self.pass_}"
                 + (f" [{self.shape.label}]" if self.shape is not None else ""))
        if self.exception is not None:
            return f"{where}: raised {self.exception}"
        if self.wrong is not None:
            return f"{where}: {self.wrong}"
        errs = ", ".join(f"{k}={v:.2e}" for k, v in self.errors.items())
        return f"{where}: {errs} (tolerance fwd {self.tolerance[0]:g}, grad {self.tolerance[1]:g})"


def check_one(variant: Variant, kind: str, causal: bool, shape: Shape, dtype: str = "float32",
              device: str = "cpu", pass_: str = "fwd") -> CheckResult:
    pattern = pattern_for(kind, causal, shape)
    res = CheckResult(variant.name, pattern.label, shape, dtype, device, pass_, tolerance=TOLERANCES[dtype])
    case = case_for(variant, kind, causal, shape, dtype, device, pass_)
    res.reasons = variant.not_supported_reasons(case)
    if res.reasons:
        return res
    backward = pass_ == "fwd_bwd"
    inputs = make_qkv(case.shape, DTYPES[dtype], device, requires_grad=backward,
                      layout="contiguous" if shape.contiguous else "transposed", kv_shape=case.kv_shape)
    q, k, v = inputs.qkv()
    made = [t.detach().clone() for t in (q, k, v)]  # as made: the reference's, and what the kernel must leave
    prepared = prepare(variant, case, inputs)  # the path sweeps time: constants bound, forward called directly
    with variant.timing_context(case), torch.set_grad_enabled(backward):
        out = prepared.kernel(q, k, v)
    problem = output_problem(out, q)  # the judgement a sweep's rows get (harness.bench.verify)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(q)
    if problem is None and backward:
        out.backward(grad_out)
    res.wrong = inputs_written((q, k, v), made) or problem
    if res.wrong is not None:
        return res
    if backward:
        ref, ref_grads = reference_with_grads(*made, pattern, grad_out)
        res.errors["out"] = relative_error(out, ref)
        for name, t, g in zip(("dq", "dk", "dv"), (q, k, v), ref_grads):
            res.errors[name] = relative_error(t.grad, g)
    else:
        with torch.no_grad():
            res.errors["out"] = relative_error(out, reference(*made, pattern))
    return res


def check_one_safely(variant: Variant, kind: str, causal: bool, shape: Shape, dtype: str = "float32",
                     device: str = "cpu", pass_: str = "fwd") -> CheckResult:
    """``check_one``, with an exception from the variant recorded as a failed result (the check goes on)."""
    try:
        return check_one(variant, kind, causal, shape, dtype, device, pass_)
    except Exception as exc:  # a variant that raises is wrong on that cell, not a crash of `check`
        try:
            label = pattern_for(kind, causal, shape).label
        except Exception:  # the pattern itself could not be made for this shape
            label = f"{kind}{'-causal' if causal else ''}"
        return CheckResult(variant.name, label, shape, dtype, device, pass_, tolerance=TOLERANCES[dtype],
                           exception=one_line(exc))


def default_dtypes(device: str) -> list[str]:
    return ["float32"] if device == "cpu" else ["float32", "float16", "bfloat16"]


def run_check(device: str = "cpu", variants: list[str] | None = None, dtypes: list[str] | None = None,
              shapes=CHECK_SHAPES, on_result=None) -> list[CheckResult]:
    """Every variant x declared pattern x causal x shape x dtype x pass; ``on_result`` sees each result."""
    registry = discover()
    results = []
    for name in variants or list(registry):
        try:
            variant = registry[name](**CHECK_PARAMS.get(name, {}))
        except Exception as exc:  # a constructor that raises fails the variant, not the check
            res = CheckResult(name, "(any)", None, "(any)", device, "(any)", exception=one_line(exc))
            results.append(res)
            if on_result:
                on_result(res)
            continue
        for kind in variant.patterns:
            for causal in (False, True):
                for shape in shapes:
                    for dtype in dtypes or default_dtypes(device):
                        for pass_ in ("fwd", "fwd_bwd") if variant.backward else ("fwd",):
                            res = check_one_safely(variant, kind, causal, shape, dtype, device, pass_)
                            results.append(res)
                            if on_result:
                                on_result(res)
    return results
