"""local, hierarchical and chunked on both of their paths (fused CPU flash kernel and plain torch, the
one CUDA runs), the kernel properties variants._flash relies on, and the chunked first-call case of
issue 24. Nothing here is timed."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from harness.bench.check import CHECK_PARAMS, CHECK_SHAPES, Shape, check_one
from harness.core.errors import InputError
from harness.core.registry import get_variant
from variants import _flash

OWN = ("local", "hierarchical", "chunked")
PATTERN = {"local": "local", "hierarchical": "hierarchical", "chunked": "global"}


@pytest.mark.parametrize("name", OWN)
@pytest.mark.parametrize("kernel", ["flash", "torch"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pass_", ["fwd", "fwd_bwd"])
def test_both_paths_exact_on_check_shapes(name, kernel, causal, pass_):
    variant = get_variant(name, **CHECK_PARAMS.get(name, {}), kernel=kernel)
    for shape in CHECK_SHAPES:
        res = check_one(variant, PATTERN[name], causal, shape, pass_=pass_)
        assert res.skipped or res.ok, res.describe()


@pytest.mark.parametrize("params", [{"chunk_q": "auto", "chunk_k": "auto"}, {"chunk_q": 7, "chunk_k": 5}])
@pytest.mark.parametrize("kind", ["global", "local", "document"])
def test_chunked_flash_chunk_sizes(params, kind):
    variant = get_variant("chunked", **params)
    for shape in CHECK_SHAPES[:5]:
        for causal in (False, True):
            res = check_one(variant, kind, causal, shape, pass_="fwd_bwd")
            assert res.skipped or res.ok, res.describe()


@pytest.mark.parametrize("block", [2, 128])
def test_local_runs_of_full_windows(block):
    """Small blocks put many full-window blocks in one call (and their backward in residue classes)."""
    variant = get_variant("local", block=block)
    for shape in (Shape(3, 4, 100, 80, window=5), Shape(2, 4, 70, 32, kv_heads=2, window=3)):
        for causal in (False, True):
            res = check_one(variant, "local", causal, shape, pass_="fwd_bwd")
            assert res.ok, res.describe()


def test_kernel_param_is_checked():
    with pytest.raises(InputError, match="kernel must be 'auto', 'flash' or 'torch'"):
        get_variant("local", kernel="fast")
    with pytest.raises(InputError, match="integer >= 1 or 'auto'"):
        get_variant("chunked", chunk_q=0)


def test_flash_kernel_empty_row_and_overlapping_views():
    """What variants._flash documents: an all-masked row gives output 0 and lse 0; key windows may be
    an overlapping strided view."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 4, 8, generator=gen)
    k = torch.randn(1, 2, 6, 8, generator=gen)
    allowed = torch.ones(4, 6, dtype=torch.bool)
    allowed[1] = False
    o, lse = _flash.flash_fwd(q, k, k, 0.5, _flash.additive(allowed, q.dtype))
    assert torch.equal(o[:, :, 1], torch.zeros(1, 2, 8)) and torch.equal(lse[:, :, 1], torch.zeros(1, 2))
    keys = torch.randn(1, 1, 20, 8, generator=gen)
    windows = _flash.row_blocks(keys, 0, 0, 1, 0, 3, 8, 4)  # (1, 3, 8, 8): windows 4 rows apart
    qw = torch.randn(1, 3, 5, 8, generator=gen)
    o, _ = _flash.flash_fwd(qw, windows, windows, 0.5)
    ref = torch.softmax(qw @ windows.transpose(-1, -2) * 0.5, -1) @ windows
    torch.testing.assert_close(o, ref)


FIRST_CALL = """
from harness.bench.check import Shape, check_one
from harness.core.registry import get_variant
r = check_one(get_variant("chunked"), "global", False, Shape(5, 1, 33, 96, contiguous=False), pass_="fwd_bwd")
print(max(r.errors.values()))
"""


def test_chunked_first_call_in_fresh_processes():
    """Issue 24's once-seen case: chunked's first call in a fresh process, B=5 H=1 N=33 D=96."""
    for _ in range(3):
        run = subprocess.run([sys.executable, "-c", FIRST_CALL], capture_output=True, text=True, check=True)
        assert float(run.stdout.split()[-1]) < 1e-5, run.stdout
