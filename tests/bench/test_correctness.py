"""Every variant, on every pattern it declares, against the float64 reference (forward and backward).

The CPU cells a variant supports are one test each; the cells it declines are not collected (each is
declined with its reasons, checked once below). On CUDA one test checks every cell and skips once
where there is no CUDA device."""

import collections

import pytest
import torch

from harness.bench.check import CHECK_PARAMS, CHECK_SHAPES, case_for, check_one, check_one_safely, default_dtypes
from harness.core.registry import discover

_VARIANTS: dict = {}


def _eager_flex(*args, **kwargs):
    """FlexAttention's unfused eager path: the same mask_mod and block mask, no compilation."""
    import warnings

    from torch.nn.attention.flex_attention import flex_attention

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(*args, **kwargs)


def _variant(name, eager=False):
    if (name, eager) not in _VARIANTS:
        variant = discover()[name](**CHECK_PARAMS.get(name, {}))
        if eager:
            variant._compiled = _eager_flex
        _VARIANTS[name, eager] = variant
    return _VARIANTS[name, eager]


def _reasons(name, kind, causal, shape, dtype, device, pass_):
    """The variant's reasons to decline the case check_one would build for this cell."""
    variant = _variant(name)
    return variant.not_supported_reasons(case_for(variant, kind, causal, shape, dtype, device, pass_))


# FlexAttention compiles every cell on CPU (about 7 s each with a cold inductor cache). Here its masks and
# block masks are checked on every cell through flex_attention's eager path (the same mask_mod and block
# mask, unfused), and the compiled kernel on the FLEX_COMPILED cells; `attnbench check` and CUDA compile
# every cell.
FLEX_FEW = {"sink", "dilated", "bigbird"}
FLEX_FEW_SHAPES = (CHECK_SHAPES[4], CHECK_SHAPES[6])
FLEX_COMPILED = {("global", True, CHECK_SHAPES[4]), ("local", False, CHECK_SHAPES[4]),
                 ("document", True, CHECK_SHAPES[6]), ("bigbird", False, CHECK_SHAPES[4])}


def _cells(device):
    """(name, kind, causal, shape, dtype, pass_) of every cell a check on ``device`` covers."""
    for name, cls in discover().items():
        for kind in cls.patterns:
            for causal in (False, True):
                for shape in CHECK_SHAPES:
                    if device == "cpu" and name == "flex" and kind in FLEX_FEW and shape not in FLEX_FEW_SHAPES:
                        continue
                    for dtype in default_dtypes(device):
                        for pass_ in ("fwd", "fwd_bwd") if cls.backward else ("fwd",):
                            yield name, kind, causal, shape, dtype, pass_


def _param(cell):
    name, kind, causal, shape, dtype, pass_ = cell
    eager = name == "flex" and (kind, causal, shape) not in FLEX_COMPILED
    return pytest.param(*cell, eager, marks=[pytest.mark.slow] if name == "flex" and not eager else [],
                        id=f"{name}{'-eager' if eager else ''}-{kind}{'-causal' if causal else ''}-{dtype}-{pass_}-{shape.label.replace(' ', '_')}")


CPU_CELLS = [c for c in _cells("cpu") if not _reasons(*c[:5], "cpu", c[5])]


def _check(device, name, kind, causal, shape, dtype, pass_, eager=False):
    res = check_one(_variant(name, eager), kind, causal, shape, dtype, device, pass_)
    assert not res.skipped, res.reasons
    assert res.errors, "nothing was compared"
    assert res.ok, res.describe()


@pytest.mark.parametrize("name, kind, causal, shape, dtype, pass_, eager", [_param(c) for c in CPU_CELLS])
def test_cpu_matches_reference(name, kind, causal, shape, dtype, pass_, eager):
    _check("cpu", name, kind, causal, shape, dtype, pass_, eager)


def test_flex_is_compiled_on_some_cpu_cells():
    compiled = [c for c in CPU_CELLS if c[0] == "flex" and (c[1], c[2], c[3]) in FLEX_COMPILED]
    assert len(compiled) == len(FLEX_COMPILED)


def test_cpu_cells_are_declined_only_by_variants_without_a_cpu_kernel_or_backward():
    """What the CPU tests leave out: the CUDA-only variants wholly, flex's backward, hierarchical's
    cells its segment cannot tile; every other variant runs every cell it declares."""
    declined = collections.defaultdict(list)
    for cell in _cells("cpu"):
        reasons = _reasons(*cell[:5], "cpu", cell[5])
        if reasons:
            declined[cell[0]].append((cell, reasons))
    ran = collections.Counter(c[0] for c in CPU_CELLS)
    assert {"sdpa_cudnn", "sdpa_efficient", "xformers"} <= set(declined) and not {"naive", "chunked", "sdpa_math"} & set(declined)
    assert all(ran[name] == 0 for name in ("sdpa_cudnn", "sdpa_efficient", "xformers"))
    assert all(cell[5] == "fwd_bwd" for cell, _ in declined["flex"]) and ran["flex"] > 0
    assert all(reasons and all(isinstance(r, str) and r for r in reasons) for cells in declined.values()
               for _, reasons in cells)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.is_available() is False")
def test_cuda_matches_reference_on_every_cell():
    """Every CUDA cell, in one test: the wrong or raising ones are listed together; a variant with a
    CUDA kernel must have compared at least one cell."""
    wrong, compared = [], collections.Counter()
    for name, kind, causal, shape, dtype, pass_ in _cells("cuda"):
        res = check_one_safely(_variant(name), kind, causal, shape, dtype, "cuda", pass_)  # a raise: one wrong cell
        if res.skipped:
            continue
        compared[name] += 1
        if not res.errors or not res.ok:
            wrong.append(res.describe())
    assert not wrong, "\n".join(wrong)
    for name in discover():
        if not _variant(name).device_reasons("cuda"):
            assert compared[name] > 0, f"{name} has a CUDA kernel but compared no cell"


def test_check_catches_a_wrong_variant(monkeypatch):
    """The check is not vacuous: a variant that drops the causal mask is reported wrong."""
    from harness.core.patterns import Pattern

    naive = discover()["naive"]()
    real_forward = naive.forward
    monkeypatch.setattr(naive, "forward", lambda q, k, v, pattern, **constants: real_forward(
        q, k, v, pattern=Pattern(pattern.kind, False, pattern.window, pattern.segment)))  # mask dropped
    res = check_one(naive, "global", True, CHECK_SHAPES[2])
    assert not res.ok and res.errors["out"] > 1e-2
