"""Is a kernel's output what its pattern defines? The same judgement for ``attnbench check`` and for
every row of a sweep: the output must be a tensor of the query's shape and dtype with finite values,
and its relative error against the float64 reference (and, for ``fwd_bwd``, that of each gradient)
within the dtype's tolerance (``harness.core.tolerances``). A row that fails is ``wrong``.

In a sweep the check runs after timing, with the prepared kernel (its constants, its compiled
function) on a second, distinct set of inputs (``CHECK_SEED``), so an output computed ahead of time
or returned again from an earlier call cannot pass. The reference is that of the inputs as made (a
kernel that writes its inputs in place is ``wrong``, and never spoils the reference a later variant is
judged by), and the kernel is called a second time on the same tensor objects holding new values
(``FRESH_SEED``, written in place without a version bump), so a kernel that remembers its output per
input tensor cannot pass either. That second output is judged on ``SECOND_CALL_ROWS`` query rows spread
over it, the first and the last included (their reference costs a fraction of the whole one's)."""

from __future__ import annotations

import math

import torch

from harness.bench.inputs import Inputs, make_inputs
from harness.bench.prepare import Prepared, prepare
from harness.core.case import Case
from harness.core.reference import reference, reference_with_grads, relative_error
from harness.core.tolerances import TOLERANCES

CHECK_SEED = 271828  # the check's inputs: neither the timed ones (seed 0) nor the compile call's
FRESH_SEED = CHECK_SEED + 1  # the values written into the check's tensors for its second call
SECOND_CALL_ROWS = 64  # query rows the second call's output is judged on (every row when it has fewer)


def spread_rows(q_len: int, count: int = SECOND_CALL_ROWS) -> torch.Tensor | None:
    """``count`` query rows spread evenly over ``q_len``, the first and the last included; None (every
    row) when there are no more than ``count``."""
    if q_len <= count:
        return None
    return torch.linspace(0, q_len - 1, count, dtype=torch.float64).round().long().unique()


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


def inputs_written(given, made) -> str | None:
    """Why the tensors handed to a kernel (q, k, v) no longer hold the values they were made with
    (``made``: copies taken before the call), or None."""
    names = [name for name, t, want in zip("qkv", given, made) if not torch.equal(t.detach(), want)]
    return f"modified its inputs in place ({', '.join(names)})" if names else None


class ReferenceCache:
    """Keeps the last few float64 references (output, and gradients when asked): the check's inputs
    depend only on the shape and the seed, so one reference serves every variant of it, and one with
    gradients serves a request without them too. A reference is built from the inputs as made, never
    from tensors a kernel has been handed. ``grads_first`` (a sweep that measures fwd_bwd too): a
    whole forward reference is built with its gradients (those of the fwd_bwd case's upstream gradient,
    drawn after q, k, v from the same seed), so the fwd_bwd cases of its shape find it built."""

    def __init__(self, size: int = 4, grads_first: bool = False) -> None:
        self.size, self.grads_first, self._items = size, grads_first, {}

    def get(self, case: Case, inputs: Inputs, seed: int = CHECK_SEED, grads: bool | None = None,
            rows: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple | None]:
        """The reference of ``inputs`` (``make_inputs(case, seed)``'s values); with the gradients of
        ``inputs.grad_out`` when ``grads`` (default: for fwd_bwd). ``rows`` (no gradients): only those
        query rows of the output (``harness.core.reference.reference``)."""
        grads = case.pass_ == "fwd_bwd" if grads is None else grads
        if self.grads_first and not grads and rows is None and case.pass_ == "fwd":
            backward = case.replace(pass_="fwd_bwd")
            out, _ = self.get(backward, Inputs(*inputs.qkv(), make_inputs(backward, seed).grad_out), seed)
            return out, None
        shape = (case.pattern_obj, case.shape, case.kv_shape, case.dtype, case.device)
        key = (*shape, grads, seed, None if rows is None else tuple(rows.tolist()))
        whole = (*shape, True, seed, None)
        if not grads and whole in self._items:
            out = self._items[whole][0]
            return (out if rows is None else out[..., rows, :]), None
        if key not in self._items:
            q, k, v = (t.detach() for t in inputs.qkv())
            if grads:
                self._items[key] = reference_with_grads(q, k, v, case.pattern_obj, inputs.grad_out)
            else:
                with torch.no_grad():
                    self._items[key] = (reference(q, k, v, case.pattern_obj, rows), None)
            while len(self._items) > self.size:
                self._items.pop(next(iter(self._items)))
        return self._items[key]


def _call(prepared: Prepared, given: tuple, made, grad_out: torch.Tensor | None):
    """One call of the kernel on ``given`` in its context (and, with ``grad_out``, its backward):
    (out, grads or None, why it is wrong so far or None). ``made``: the values ``given`` must keep."""
    with prepared.context(), torch.set_grad_enabled(prepared.case.pass_ == "fwd_bwd"):
        out = prepared.kernel(*given)
        problem = inputs_written(given, made) or output_problem(out, given[0])
        grads = None
        if problem is None and grad_out is not None:
            grads = torch.autograd.grad(out, given, grad_out)
            problem = inputs_written(given, made)  # its backward wrote them
    return out, grads, problem


def check_prepared(prepared: Prepared, cache: ReferenceCache | None = None) -> dict:
    """Run ``prepared``'s kernel on fresh inputs (``CHECK_SEED``) and judge it; if it passes, write new
    values (``FRESH_SEED``) into the same tensors and judge its output once more. Returns the error
    columns of a row (``rel_error``, of the first call; ``grad_rel_error``, the worst of dq, dk, dv,
    for fwd_bwd) and ``wrong``: the reason it fails, or None. The timed inputs are not touched."""
    case = prepared.case
    cache = cache or ReferenceCache(2)
    backward = case.pass_ == "fwd_bwd"
    inputs = make_inputs(case, seed=CHECK_SEED)
    given = inputs.qkv()
    made = Inputs(*(t.detach().clone() for t in given), grad_out=inputs.grad_out)  # as made, kept from the kernel
    out, grads, problem = _call(prepared, given, made.qkv(), inputs.grad_out if backward else None)
    if problem is not None:
        return {"rel_error": None, "grad_rel_error": None, "wrong": problem}
    ref, ref_grads = cache.get(case, made, CHECK_SEED)
    fields = {"rel_error": relative_error(out.detach(), ref), "grad_rel_error": None}
    problems = [error_problem("output", fields["rel_error"], case.dtype, False)]
    if backward:
        problems += [f"{name} {p}" for name, g, t in zip(("dq", "dk", "dv"), grads, given)
                     if (p := output_problem(g, t))]
        if not any(problems[1:]):
            errors = {name: relative_error(g, want) for name, g, want in zip(("dq", "dk", "dv"), grads, ref_grads)}
            worst = max(errors, key=lambda n: errors[n] if math.isfinite(errors[n]) else math.inf)
            fields["grad_rel_error"] = errors[worst]
            problems.append(error_problem(worst, errors[worst], case.dtype, True))
    del out, grads
    fields["wrong"] = next((p for p in problems if p), None) or _second_call(prepared, given, ref, cache)
    return fields


def _second_call(prepared: Prepared, given: tuple, first_ref: torch.Tensor, cache: ReferenceCache) -> str | None:
    """Write new values into the check's own tensors (same objects, storage, strides and version
    counters; through ``.data``, so no autograd graph or version records it) and call the kernel again
    (same shapes and grad mode: a compiled kernel does not recompile). Why its output is not that of
    the new values (judged on ``spread_rows``), or None."""
    case = prepared.case
    fresh = make_inputs(case, seed=FRESH_SEED)
    with torch.no_grad():
        for t, new in zip(given, fresh.qkv()):
            t.data.copy_(new.detach())
    out, _, problem = _call(prepared, given, [t.detach() for t in fresh.qkv()], None)
    if problem is not None:
        return f"{problem} (on a second call, with new input values)"
    rows = spread_rows(case.q_len)
    ref, _ = cache.get(case, fresh, FRESH_SEED, grads=False, rows=rows)
    if rows is not None:
        out, first_ref = out[..., rows, :], first_ref[..., rows, :]
    error = relative_error(out.detach(), ref)
    problem = error_problem("output", error, case.dtype, False)
    if problem is None:
        return None
    if error_problem("output", relative_error(out.detach(), first_ref), case.dtype, False) is None:
        return "returned an earlier call's output for new input values (second call, same tensors)"
    return f"{problem} (on a second call, with new input values)"


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
