"""A kernel whose output is not what its pattern defines is a `wrong` row, whatever its speed: NaN,
another dtype, an error above the tolerance, an output cached from an earlier call or worked out
ahead of time, another shape. `attnbench check` and a sweep judge alike. Real timing runs here, but
only statuses and reasons are asserted, never how fast anything was."""

from __future__ import annotations

import pytest
import torch

from harness.bench.check import Shape, check_one
from harness.bench.verify import ReferenceCache, check_prepared, error_problem, output_problem
from harness.bench.prepare import prepare
from harness.core.case import Case
from harness.core.registry import Variant, get_variant
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
    assert not nan.ok and nan.exception is None and "non-finite" in nan.wrong  # wrong, not "raised"


def test_the_judgement_itself():
    q = torch.zeros(1, 2, 4, 8)
    assert output_problem(q.clone(), q) is None
    assert "NoneType" in output_problem(None, q)
    assert "inf" in output_problem(torch.full_like(q, float("inf")), q)
    assert error_problem("output", 1e-6, "float32", False) is None
    assert "tolerance" in error_problem("output", 1e-3, "float32", False)
    assert error_problem("dq", 5e-5, "float32", True) is None  # gradients have their own tolerance
    assert "nan" in error_problem("output", float("nan"), "float32", False)


class _WritesK(Variant):
    """Zeroes k in place, then attends: uniform attention (the mean of v), the reference of what it
    leaves. Differentiable, so its fwd_bwd is timed like any other."""

    name = "test_writes_k"
    patterns = ("global",)

    def forward(self, q, k, v, pattern):
        with torch.no_grad():
            k.zero_()
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=pattern.causal)


class _Memo(Variant):
    """Right on a first call; then the output it computed for the same tensors (identity, storage and
    version), whatever they hold now."""

    name = "test_memo_unit"
    patterns = ("global",)

    def forward(self, q, k, v, pattern):
        key = (id(q), q.data_ptr(), k.data_ptr(), v.data_ptr(), q._version, k._version, v._version)
        memo = self.__dict__.setdefault("memo", {})
        if key not in memo:
            memo.clear()
            memo[key] = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=pattern.causal)
        return memo[key]


class _OutBuffer(Variant):
    """Right, written into one output buffer it returns on every call: not a memo, and not wrong."""

    name = "test_out_buffer"
    patterns = ("global",)
    backward = False

    def forward(self, q, k, v, pattern):
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=pattern.causal)
        buf = self.__dict__.setdefault("buf", torch.empty_like(out))
        return buf.copy_(out)


@pytest.fixture
def cheats(monkeypatch):
    from harness.core.registry import REGISTRY

    for cls in (_WritesK, _Memo, _OutBuffer):
        monkeypatch.setitem(REGISTRY, cls.name, cls)


def _case(name: str, pass_: str) -> Case:
    return Case(name, seq_len=24, heads=2, head_dim=8, pass_=pass_)


@pytest.mark.parametrize("pass_", ["fwd", "fwd_bwd"])
def test_a_kernel_that_writes_its_inputs_is_wrong_and_spoils_no_reference(cheats, pass_):
    cache = ReferenceCache()
    fields = check_prepared(prepare(_WritesK(), _case(_WritesK.name, pass_)), cache)
    assert fields["wrong"] == "modified its inputs in place (k)", fields["wrong"]
    honest = check_prepared(prepare(get_variant("naive"), _case("naive", pass_)), cache)  # same shape, same cache
    assert honest["wrong"] is None and honest["rel_error"] < 1e-5, honest


def test_a_sweep_calls_the_writer_wrong_and_the_next_variant_ok(cheats, tmp_path):
    cfg = build_config({**QUICK, "variants": [_WritesK.name, "naive"], "passes": ["fwd", "fwd_bwd"]})
    df = load_run(run_sweep(cfg, out=tmp_path / "r", quiet=True))[0].set_index(["variant", "pass"])
    for pass_ in ("fwd", "fwd_bwd"):
        row = df.loc[(_WritesK.name, pass_)]
        assert row.status == "wrong" and "modified its inputs in place (k)" in row.reason, row.reason
        assert df.loc[("naive", pass_)].status == "ok", df.loc[("naive", pass_)].reason


def test_check_names_the_input_written():
    res = check_one(_WritesK(), "global", False, Shape(1, 2, 32, 16), pass_="fwd_bwd")
    assert not res.ok and res.exception is None and res.wrong == "modified its inputs in place (k)"
    assert "raised" not in res.describe()


@pytest.mark.parametrize("pass_, seq_len", [("fwd", 24), ("fwd_bwd", 24), ("fwd", 200)])  # 200: judged on spread rows
def test_a_kernel_that_returns_its_output_for_the_same_tensors_again_is_wrong(cheats, pass_, seq_len):
    fields = check_prepared(prepare(_Memo(), _case(_Memo.name, pass_).replace(seq_len=seq_len)))
    assert fields["wrong"] is not None and "earlier call's output for new input values" in fields["wrong"]
    assert fields["rel_error"] < 1e-5  # its first call was right


def test_an_output_buffer_reused_on_every_call_is_not_a_memo(cheats):
    assert check_prepared(prepare(_OutBuffer(), _case(_OutBuffer.name, "fwd")))["wrong"] is None


def test_the_second_call_leaves_the_timed_inputs_alone():
    prepared = prepare(get_variant("naive"), _case("naive", "fwd"))
    before = [t.clone() for t in prepared.inputs.qkv()]
    assert check_prepared(prepared)["wrong"] is None
    assert all(torch.equal(t, b) for t, b in zip(prepared.inputs.qkv(), before))


def test_one_reference_serves_every_variant_and_pass_of_a_shape(monkeypatch):
    """The check's references of a shape are built once: its gradients' forward serves a fwd case, and
    the second call's reference (spread rows, harness.bench.verify.spread_rows) serves both passes."""
    from harness.bench import verify

    built = []
    real, real_grads = verify.reference, verify.reference_with_grads
    monkeypatch.setattr(verify, "reference", lambda *a, **k: built.append("out") or real(*a, **k))
    monkeypatch.setattr(verify, "reference_with_grads", lambda *a, **k: built.append("grads") or real_grads(*a, **k))
    cache = ReferenceCache()
    for pass_ in ("fwd_bwd", "fwd"):
        for name in ("naive", "chunked"):
            fields = check_prepared(prepare(get_variant(name), _case(name, pass_).replace(seq_len=100)), cache)
            assert fields["wrong"] is None, fields
    assert built == ["grads", "out"], built


def test_with_grads_first_a_fwd_case_builds_the_reference_its_fwd_bwd_cases_use(monkeypatch):
    """A sweep that measures both passes meets a shape's fwd cases first: with ``grads_first`` the
    first builds the reference with its gradients (the fwd_bwd case's upstream gradient), every case
    of either pass is judged by it, and its output is the plain forward reference's."""
    from harness.bench import verify

    built = []
    real, real_grads = verify.reference, verify.reference_with_grads
    monkeypatch.setattr(verify, "reference", lambda *a, **k: built.append("out") or real(*a, **k))
    monkeypatch.setattr(verify, "reference_with_grads", lambda *a, **k: built.append("grads") or real_grads(*a, **k))
    first, plain = ReferenceCache(grads_first=True), ReferenceCache()
    for pass_ in ("fwd", "fwd_bwd"):
        for name in ("naive", "chunked"):
            fields = check_prepared(prepare(get_variant(name), _case(name, pass_).replace(seq_len=100)), first)
            assert fields["wrong"] is None and fields["rel_error"] < 1e-5, fields
    assert built == ["grads", "out"], built
    case = _case("naive", "fwd").replace(seq_len=100)
    made = verify.make_inputs(case, seed=verify.CHECK_SEED)
    assert torch.equal(first.get(case, made)[0], plain.get(case, made)[0])
