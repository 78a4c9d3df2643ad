"""`attnbench check` reports a variant that raises, or cannot be made, and goes on with the rest."""

from __future__ import annotations

from harness.bench.check import CheckResult
from harness.core.registry import REGISTRY, Variant


class _RaisesWhenCausal(Variant):
    name = "test_raises_when_causal"
    description = "test variant: raises on causal patterns"
    patterns = ("global",)
    backward = False

    def forward(self, q, k, v, pattern):
        import torch

        if pattern.causal:
            raise RuntimeError("deliberate failure\nsecond line")
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def test_check_reports_a_variant_that_raises_and_goes_on(cli, monkeypatch):
    monkeypatch.setitem(REGISTRY, _RaisesWhenCausal.name, _RaisesWhenCausal)
    rc, out, err = cli("check", "--variants", _RaisesWhenCausal.name, "-v")
    assert rc == 1 and "Traceback" not in out + err
    failed = [line for line in out.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 4 and all("global-causal" in f and "raised RuntimeError: deliberate failure" in f
                                    and "[B=" in f for f in failed)
    assert sum(line.startswith("ok ") for line in out.splitlines()) == 4  # the non-causal cells still ran
    assert "4 correct, 0 wrong, 4 raised an exception" in out


def test_check_reports_a_variant_that_cannot_be_made(cli, monkeypatch):
    class Unmakeable(_RaisesWhenCausal):
        name = "test_unmakeable"

        def __init__(self, **params):
            raise OSError("no such library")

    monkeypatch.setitem(REGISTRY, Unmakeable.name, Unmakeable)
    rc, out, err = cli("check", "--variants", Unmakeable.name)
    assert rc == 1 and "FAILED test_unmakeable" in out and "raised OSError: no such library" in out
    assert CheckResult("x", "p", None, "float32", "cpu", "fwd", exception="E: x").ok is False
