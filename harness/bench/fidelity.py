"""Is a kernel's output what its pattern defines? The same judgement for ``attnbench check`` and for
every row of a sweep: the output must be a tensor of the query's shape and dtype with finite values,
and its relative error against the float64 reference (and, for ``fwd_bwd``, that of each gradient)
within the dtype's tolerance (``harness.core.tolerances``). A row that fails is ``wrong``.

In a sweep the check runs after timing, with the prepared kernel (its constants, its compiled
function) on a second, distinct set of inputs (``CHECK_SEED``), so an output computed ahead of time
or returned again from an earlier call cannot pass."""

from __future__ import annotations

import math

import torch

from harness.bench.inputs import make_inputs
from harness.bench.prepare import Prepared, prepare
from harness.core.case import Case
from harness.core.reference import reference, reference_with_grads, relative_error
from harness.core.tolerances import TOLERANCES

CHECK_SEED = 271828  # the check's inputs: neither the timed ones (seed 0) nor the compile call's


def output_problem(out, q: torch.Tensor) -> str | None:
    """Why ``out`` cannot be the attention output for queries ``q`` (B, H, q_len, D), or None."""
    if not isinstance(out, torch.Tensor):
        return f"returned {type(out).__name__}, expected a tensor of shape {tuple(q.shape)}"
    if out.shape != q.shape:
        return f"returned shape {tuple(out.shape)}, expected {tuple(q.shape)}"
    if out.dtype != q.dtype:
        return f"returned dtype {str(out.dtype).removeprefix('torch.')}, expected {str(q.dtype).removeprefix('torch.')}"
    bad = int((~torch.isfinite(out)).sum())
    if bad:
        return f"returned {bad} non-finite value(s) of {out.numel()} (nan or inf)"
    return None


def error_problem(name: str, error: float, dtype: str, backward: bool) -> str | None:
    """Why a relative error is out of bounds for ``dtype`` (forward or gradient tolerance), or None."""
    tol = TOLERANCES[dtype][1 if backward else 0]
    if not math.isfinite(error):
        return f"{name} relative error is {error} against the float64 reference"
    if error > tol:
        return f"{name} relative error {error:.2e} against the float64 reference, above {dtype}'s tolerance {tol:g}"
    return None


class ReferenceCache:
    """Keeps the last few float64 references (output, and gradients for fwd_bwd): the check's inputs
    depend only on the shape, so one reference serves every variant of it."""

    def __init__(self, size: int = 2) -> None:
        self.size, self._items = size, {}

    def get(self, case: Case, inputs) -> tuple[torch.Tensor, tuple | None]:
        key = (case.pattern_obj, case.shape, case.kv_shape, case.dtype, case.device, case.pass_)
        if key not in self._items:
            q, k, v = (t.detach() for t in inputs.qkv())
            if case.pass_ == "fwd_bwd":
                self._items[key] = reference_with_grads(q, k, v, case.pattern_obj, inputs.grad_out)
            else:
                with torch.no_grad():
                    self._items[key] = (reference(q, k, v, case.pattern_obj), None)
            while len(self._items) > self.size:
                self._items.pop(next(iter(self._items)))
        return self._items[key]


def check_prepared(prepared: Prepared, cache: ReferenceCache | None = None) -> dict:
    """Run ``prepared``'s kernel once on fresh inputs (``CHECK_SEED``) and judge it. Returns the error
    columns of a row (``rel_error``; ``grad_rel_error``, the worst of dq, dk, dv, for fwd_bwd) and
    ``wrong``: the reason it fails, or None."""
    case = prepared.case
    inputs = make_inputs(case, seed=CHECK_SEED)
    q, k, v = inputs.qkv()
    backward = case.pass_ == "fwd_bwd"
    with prepared.context(), torch.set_grad_enabled(backward):
        out = prepared.kernel(q, k, v)
        problem = output_problem(out, q)
        grads = None
        if problem is None and backward:
            grads = torch.autograd.grad(out, (q, k, v), inputs.grad_out)
    if problem is not None:
        return {"rel_error": None, "grad_rel_error": None, "wrong": problem}
    ref, ref_grads = (cache or ReferenceCache(1)).get(case, inputs)
    fields = {"rel_error": relative_error(out.detach(), ref), "grad_rel_error": None}
    problems = [error_problem("output", fields["rel_error"], case.dtype, False)]
    if backward:
        problems += [f"{name} {p}" for name, g, t in zip(("dq", "dk", "dv"), grads, (q, k, v))
                     if (p := output_problem(g, t))]
        if not any(problems[1:]):
            errors = {name: relative_error(g, want) for name, g, want in zip(("dq", "dk", "dv"), grads, ref_grads)}
            worst = max(errors, key=lambda n: errors[n] if math.isfinite(errors[n]) else math.inf)
            fields["grad_rel_error"] = errors[worst]
            problems.append(error_problem(worst, errors[worst], case.dtype, True))
    fields["wrong"] = next((p for p in problems if p), None)
    return fields


def check_case(variant, case: Case, twin: Case, prepared: Prepared | None,
               cache: ReferenceCache | None = None) -> dict:
    """``check_prepared`` on the case's own prepared kernel, or on ``twin`` (a smaller case of the same
    pattern, prepared afresh) when the case's reference would not fit; the fields say which."""
    if prepared is None or prepared.case != twin:
        prepared = prepare(variant, twin)
    fields = check_prepared(prepared, cache)
    on_twin = (twin.seq_len, twin.q_len, twin.batch, twin.heads) != (case.seq_len, case.q_len, case.batch, case.heads)
    if fields["wrong"] and on_twin:
        fields["wrong"] += (f" (checked on a smaller twin: batch {twin.batch}, heads {twin.heads}, "
                            f"seq_len {twin.seq_len})")
    return {**fields, "error_seq_len": twin.seq_len, "error_batch": twin.batch, "error_heads": twin.heads,
            "error_on_twin": on_twin}
