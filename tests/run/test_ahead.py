"""Compiling ahead (harness.run.ahead): which cases are compiled in parallel before a sweep, and that a
worker's failure is reported, never raised (the sweep compiles the case again and makes it a row)."""

from __future__ import annotations

import concurrent.futures
import json
import os
from concurrent.futures.process import BrokenProcessPool

import pytest

from harness.core.case import Case
from harness.core.errors import InputError
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
    assert build_config({}).execution.compile_ahead is True
    assert build_config({"compile_ahead": False}).execution.compile_ahead is False
    with pytest.raises(InputError, match="compile_ahead"):
        build_config({"compile_ahead": "no"})


TINY = dict(variants=["naive"], patterns=["global"], causal=[False, True], seq_lens=[16], heads=[1], batch=[1],
            head_dims=[8], dtypes=["float32"], passes=["fwd"], budget_s=0.01, timeout_s=60, device="cpu",
            retries=0, ceiling_retries=0, recheck_retries=0)


def _run_json(run_dir) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_a_sweep_compiles_ahead_before_its_first_case_and_records_it(monkeypatch, tmp_path):
    """The sweep hands its cases to compile_ahead once, before any is measured, and keeps its account."""
    from harness.run import sweep

    seen = []

    def fake(todo, registry, quiet):
        seen.append((len(todo), (tmp_path / "r" / "journal.jsonl").exists()))
        return {"cases": 2, "workers": 2, "seconds": 1.0, "failed": []}

    monkeypatch.setattr(sweep, "compile_ahead", fake)
    meta = _run_json(sweep.run_sweep(build_config(TINY), out=tmp_path / "r", quiet=True))
    assert seen == [(2, False)] and meta["compile_ahead"] == [{"cases": 2, "workers": 2, "seconds": 1.0, "failed": []}]
    assert "compile ahead" in meta["phases_s"] and meta["status"] == "complete"
    seen.clear()
    sweep.run_sweep(build_config({**TINY, "compile_ahead": False}), out=tmp_path / "off", quiet=True)
    assert seen == []


def test_a_stop_while_compiling_ahead_leaves_a_run_to_resume(monkeypatch, tmp_path, capsys):
    from harness.run import sweep

    def stopped(todo, registry, quiet):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "compile_ahead", stopped)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(build_config(TINY), out=tmp_path / "r", quiet=True)
    assert _run_json(tmp_path / "r")["status"] == "interrupted"
    assert f"finish with: attnbench sweep --resume {tmp_path / 'r'}" in capsys.readouterr().err
    monkeypatch.setattr(sweep, "compile_ahead", lambda todo, registry, quiet: {})
    assert _run_json(sweep.run_sweep(resume=tmp_path / "r", quiet=True))["status"] == "complete"


def test_an_error_while_compiling_ahead_is_a_warning_not_a_failed_run(monkeypatch, tmp_path, capsys):
    from harness.run import sweep

    def broken(todo, registry, quiet):
        raise OSError("no /dev/shm")

    monkeypatch.setattr(sweep, "compile_ahead", broken)
    meta = _run_json(sweep.run_sweep(build_config(TINY), out=tmp_path / "r", quiet=True))
    assert meta["status"] == "complete" and "compile_ahead" not in meta
    assert "warning: compiling ahead failed (OSError: no /dev/shm)" in capsys.readouterr().err


def test_a_worker_that_dies_gives_the_pool_up_and_the_sweep_compiles_the_rest(monkeypatch):
    """A dead worker breaks the pool (BrokenProcessPool): compile_ahead says so and returns, never hangs."""
    class Pool:
        down = False

        def shutdown(self, wait=True, cancel_futures=False):
            Pool.down = True

    def start(workers, todo):
        dead = concurrent.futures.Future()
        dead.set_exception(BrokenProcessPool("a worker died"))
        return Pool(), [dead]

    monkeypatch.setattr(ahead, "_start", start)
    cases = [Case(_Compiling.name, seq_len=n) for n in (16, 32)]
    got = ahead.compile_ahead(cases, {_Compiling.name: _Compiling}, quiet=True, workers=2)
    assert got["broken"] == "BrokenProcessPool: a worker died" and Pool.down
