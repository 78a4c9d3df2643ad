"""Compiling ahead (harness.run.ahead): which cases are compiled in parallel before a sweep, and that a
worker's failure is reported, never raised (the sweep compiles the case again and makes it a row)."""

from __future__ import annotations

import os

from harness.core.case import Case
from harness.core.registry import Variant, discover
from harness.run import ahead
from harness.run.validate import build_config


class _Compiling(Variant):
    """Registered only in this test's registry dict: a spawned worker cannot find it, so its compile fails."""

    name = "not_in_any_worker"
    patterns = ("global",)
    compiles = True


def test_ahead_cases_are_the_cpu_cases_a_compiling_variant_runs():
    registry = discover()
    cases = [Case("flex", "local", window=8, seq_len=64), Case("flex", seq_len=64, pass_="fwd_bwd"),
             Case("flex", seq_len=64, device="cuda"), Case("naive", seq_len=64), Case("no_such_variant")]
    assert ahead.ahead_cases(cases, registry) == cases[:1]  # fwd_bwd: flex refuses it on a CPU


def test_nothing_is_compiled_ahead_with_one_case_or_one_worker():
    registry = discover()
    one = [Case("flex", "local", window=8, seq_len=64)]
    assert ahead.compile_ahead(one, registry, quiet=True) == {}
    two = one + [Case("flex", "local", window=8, seq_len=128)]
    assert ahead.compile_ahead(two, registry, quiet=True, workers=1) == {}


def test_a_case_a_worker_cannot_compile_is_reported_and_the_environment_restored():
    before = {k: os.environ.get(k) for k in ahead.WORKER_ENV}
    cases = [Case(_Compiling.name, seq_len=n) for n in (16, 32)]
    got = ahead.compile_ahead(cases, {_Compiling.name: _Compiling}, quiet=True, workers=2)
    assert got["cases"] == 2 and got["workers"] == 2 and len(got["failed"]) == 2, got
    assert all("unknown variant 'not_in_any_worker'" in f["error"] for f in got["failed"]), got["failed"]
    assert {k: os.environ.get(k) for k in ahead.WORKER_ENV} == before


def test_compile_ahead_is_on_by_default_and_a_bad_value_is_named():
    import pytest

    from harness.core.errors import InputError

    assert build_config({}).execution.compile_ahead is True
    assert build_config({"compile_ahead": False}).execution.compile_ahead is False
    with pytest.raises(InputError, match="compile_ahead"):
        build_config({"compile_ahead": "no"})
