"""A kernel whose output is not what its pattern defines is a `wrong` row, whatever its speed: NaN,
another dtype, an error above the tolerance, an output cached from an earlier call or worked out
ahead of time, another shape. `attnbench check` and a sweep judge alike. Real timing runs here, but
only statuses and reasons are asserted, never how fast anything was."""

from __future__ import annotations

import pytest
import torch

from harness.bench.check import Shape, check_one
from harness.bench.fidelity import check_prepared, error_problem, output_problem
from harness.bench.prepare import prepare
from harness.core.case import Case
from harness.core.registry import get_variant
from harness.run.sweep import run_sweep
from harness.run.validate import build_config
from harness.store.load import load_run

QUICK = {"patterns": ["global"], "causal": [False], "seq_lens": [32], "heads": [2], "head_dims": [16],
         "budget_s": 0.005, "retries": 0, "ceiling_retries": 0, "recheck_retries": 0}


def sweep_of(misbehave_plugin, tmp_path, mode: str, passes=("fwd",)):
    cfg = build_config({**QUICK, "variants": ["naive", misbehave_plugin], "passes": list(passes),
                        "params": {misbehave_plugin: {"mode": mode}}})
    df, _ = load_run(run_sweep(cfg, out=tmp_path / mode, quiet=True))
    return df.set_index(["variant", "pass"])


@pytest.mark.parametrize("mode, words", [
    ("nan", ["non-finite", "nan"]),
    ("float64", ["dtype float64", "expected float32"]),
    ("scaled", ["output relative error", "above float32's tolerance"]),
    ("cached", ["output relative error"]),
    ("precomputed", ["output relative error"]),
    ("shape", ["returned shape (1, 2, 32, 15), expected (1, 2, 32, 16)"]),
])
def test_a_wrong_forward_is_a_wrong_row_with_its_reason(misbehave_plugin, tmp_path, mode, words):
    df = sweep_of(misbehave_plugin, tmp_path, mode)
    row = df.loc[(misbehave_plugin, "fwd")]
    assert row.status == "wrong", row.reason
    assert all(w in row.reason for w in words), row.reason
    assert df.loc[("naive", "fwd")].status == "ok"
    assert row.time_s_median > 0  # its time is kept, for a user who wants to see it


def test_a_wrong_shape_under_backward_names_the_shapes(misbehave_plugin, tmp_path):
    row = sweep_of(misbehave_plugin, tmp_path, "shape", passes=("fwd_bwd",)).loc[(misbehave_plugin, "fwd_bwd")]
    assert row.status == "wrong" and "returned shape (1, 2, 32, 15), expected shape (1, 2, 32, 16)" in row.reason


def test_wrong_gradients_are_wrong(tmp_path):
    """A forward that is right but whose backward is not (the gradient of another function)."""
    from harness.core.registry import REGISTRY, Variant

    class BadGrad(Variant):
        name = "test_bad_grad"
        patterns = ("global",)

        def forward(self, q, k, v, pattern):
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            return out.detach() + 0.5 * (q - q.detach()) + 0 * (k + v).sum()  # the value of out, gradients not

    REGISTRY["test_bad_grad"] = BadGrad
    try:
        case = Case("test_bad_grad", seq_len=24, heads=2, head_dim=8, pass_="fwd_bwd")
        fields = check_prepared(prepare(BadGrad(), case))
        assert fields["rel_error"] < 1e-5 and fields["grad_rel_error"] > 1e-2
        assert fields["wrong"].startswith("d") and "relative error" in fields["wrong"]
    finally:
        REGISTRY.pop("test_bad_grad")


def test_check_and_a_sweep_agree(misbehave_plugin, tmp_path):
    variant = get_variant(misbehave_plugin, mode="scaled")
    assert not check_one(variant, "global", False, Shape(1, 2, 32, 16)).ok
    assert check_one(get_variant(misbehave_plugin, mode="ok"), "global", False, Shape(1, 2, 32, 16)).ok
    assert sweep_of(misbehave_plugin, tmp_path, "scaled").loc[(misbehave_plugin, "fwd")].status == "wrong"
    nan = check_one(get_variant(misbehave_plugin, mode="nan"), "global", False, Shape(1, 2, 32, 16))
    assert not nan.ok and "non-finite" in nan.exception


def test_the_judgement_itself():
    q = torch.zeros(1, 2, 4, 8)
    assert output_problem(q.clone(), q) is None
    assert "NoneType" in output_problem(None, q)
    assert "inf" in output_problem(torch.full_like(q, float("inf")), q)
    assert error_problem("output", 1e-6, "float32", False) is None
    assert "tolerance" in error_problem("output", 1e-3, "float32", False)
    assert error_problem("dq", 5e-5, "float32", True) is None  # gradients have their own tolerance
    assert "nan" in error_problem("output", float("nan"), "float32", False)
