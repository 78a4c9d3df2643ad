"""Every variant, on every pattern it declares, against the float64 reference (forward and backward)."""

import pytest
import torch

from harness.bench.check import CHECK_PARAMS, CHECK_SHAPES, check_one, default_dtypes
from harness.core.registry import discover


def _cells(device):
    for name, cls in discover().items():
        for kind in cls.patterns:
            for causal in (False, True):
                for shape in CHECK_SHAPES:
                    for dtype in default_dtypes(device):
                        for pass_ in ("fwd", "fwd_bwd") if cls.backward else ("fwd",):
                            marks = [pytest.mark.slow] if name == "flex" else []
                            yield pytest.param(name, kind, causal, shape, dtype, pass_, marks=marks,
                                               id=f"{name}-{kind}{'-causal' if causal else ''}-{dtype}-{pass_}-"
                                                  f"{shape.label.replace(' ', '_')}")


_VARIANTS: dict = {}


def _variant(name):
    if name not in _VARIANTS:
        _VARIANTS[name] = discover()[name](**CHECK_PARAMS.get(name, {}))
    return _VARIANTS[name]


def _run(device, name, kind, causal, shape, dtype, pass_):
    res = check_one(_variant(name), kind, causal, shape, dtype, device, pass_)
    if res.skipped:
        pytest.skip(f"{name} unavailable: " + "; ".join(res.reasons))
    assert res.errors, "nothing was compared"
    assert res.ok, res.describe()


@pytest.mark.parametrize("name, kind, causal, shape, dtype, pass_", list(_cells("cpu")))
def test_cpu_matches_reference(name, kind, causal, shape, dtype, pass_):
    _run("cpu", name, kind, causal, shape, dtype, pass_)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.is_available() is False")
@pytest.mark.parametrize("name, kind, causal, shape, dtype, pass_", list(_cells("cuda")))
def test_cuda_matches_reference(name, kind, causal, shape, dtype, pass_):
    _run("cuda", name, kind, causal, shape, dtype, pass_)


def test_check_catches_a_wrong_variant(monkeypatch):
    """The check is not vacuous: a variant that drops the causal mask is reported wrong."""
    from harness.core.patterns import Pattern

    naive = discover()["naive"]()
    real_forward = naive.forward
    monkeypatch.setattr(naive, "forward", lambda q, k, v, pattern, **constants: real_forward(
        q, k, v, pattern=Pattern(pattern.kind, False, pattern.window, pattern.segment)))  # mask dropped
    res = check_one(naive, "global", True, CHECK_SHAPES[2])
    assert not res.ok and res.errors["out"] > 1e-2
