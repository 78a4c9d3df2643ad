"""Trust flags from the evidence beside each time, cross-cell checks, retries, and bad input."""

import json
import math

import pytest

from harness.analysis.trust import assess, best_calibration, bimodal, cross_flags, row_flags, summary, used_samples
from harness.cli.main import main
from harness.core.case import Case
from harness.run import executors
from harness.run.validate import build_config


def ok_row(**changes):
    row = {"status": "ok", "time_s_median": 1e-3, "time_s_iqr": 1e-5, "time_n_samples": 10,
           "time_number_per_sample": 1, "time_samples_s": [1e-3] * 10, "calibration_s": 1e-3, "host_busy": 0.0,
           "ceiling_fraction": 0.3}
    return {**row, **changes}


@pytest.mark.parametrize("changes,reason", [
    ({"time_n_samples": 1}, "few calls"),
    ({"time_s_iqr": 3e-4}, "noisy"),
    ({"time_samples_s": [1e-3] * 6 + [3e-3] * 4}, "bimodal"),
    ({"host_busy": 0.6}, "host busy"),
    ({"calibration_s": 1.3e-3}, "slow machine"),
    ({"ceiling_fraction": 2.57}, "above ceiling"),
    ({"time_contended": [True] * 10}, "contended"),
    ({"time_fault_samples": [8192.0] * 10}, "page faults"),
])
def test_each_piece_of_evidence_raises_its_flag(changes, reason):
    assert row_flags(ok_row(), 1e-3) == []
    flags = row_flags(ok_row(**changes), 1e-3)
    assert [f.split(":")[0] for f in flags] == [reason]


def test_contended_samples_are_left_out_of_the_sample_flags():
    """Two clusters, the slow one made of samples that waited for a CPU: judged on the clean ones, the
    row is neither bimodal nor contended; with every sample contended it is judged on all of them."""
    samples, contended = [1e-3] * 6 + [3e-3] * 4, [False] * 6 + [True] * 4
    assert row_flags(ok_row(time_samples_s=samples, time_contended=contended), 1e-3) == []
    assert used_samples({"time_samples_s": samples, "time_contended": contended}) == [1e-3] * 6
    flags = row_flags(ok_row(time_samples_s=samples, time_contended=[True] * 10), 1e-3)
    assert sorted(f.split(":")[0] for f in flags) == ["bimodal", "contended"]
    assert used_samples({"time_samples_s": samples, "time_contended": None}) == samples


def test_the_summary_counts_the_samples_left_out_as_contended():
    from harness.cli.show import trust_line
    from harness.render.trust_text import contention_text, evidence_clauses

    rows = assess([ok_row(time_contended=[False] * 8 + [True] * 2), ok_row(time_contended=[True] * 10),
                   ok_row(time_contended=None)], {})
    t = summary(rows)
    assert t["contention"] == {"samples": 20, "contended": 12, "cells": 2, "all_contended": 1}
    assert t["flags"] == {"contended": 1} and t["trusted"] == 2
    assert contention_text(t).startswith("12 of 20 timing samples (in 2 cells) waited for a CPU")
    assert evidence_clauses(t) == [contention_text(t)] and contention_text(t) in trust_line(t)
    assert "contention" not in summary(assess([ok_row()], {})) and contention_text({}) == ""


def test_the_samples_the_timing_used_are_those_judged_and_the_slow_ones_are_counted():
    """``time_used`` (the timing's pick: clean and fast samples) decides which samples are judged; the
    summary counts the samples timed while the machine was slow and those of them left out."""
    from harness.render.trust_text import evidence_clauses, slow_text

    samples, slow = [1e-3] * 6 + [2e-3] * 4, [False] * 6 + [True] * 4
    row = ok_row(time_samples_s=samples, time_slow=slow, time_used=[not s for s in slow],
                 time_contended=[False] * 10)
    assert used_samples(row) == [1e-3] * 6 and row_flags(row, 1e-3) == []
    kept = ok_row(time_samples_s=samples, time_slow=slow, time_used=[True] * 10)  # too few fast: all judged
    assert used_samples(kept) == samples and [f.split(":")[0] for f in row_flags(kept, 1e-3)] == ["bimodal"]
    t = summary(assess([row, kept, ok_row()], {}))
    assert t["slow"] == {"samples": 20, "slow": 8, "left_out": 4, "cells": 2}
    assert slow_text(t).startswith("8 of 20 timing samples (in 2 cells) were timed while the machine was slow")
    assert slow_text(t) in evidence_clauses(t) and "slow" not in summary(assess([ok_row()], {})) and slow_text({}) == ""


def test_calibration_is_judged_against_the_best_with_the_same_threads():
    # The kernel runs on all of torch's threads: 1-thread cells are not "slow" against a 2-thread best.
    meta = {"calibration": [{"time_s_median": 1e-3, "threads": 2}]}
    rows = [ok_row(torch_threads=2, calibration_s=1e-3), ok_row(torch_threads=1, calibration_s=1.9e-3),
            ok_row(torch_threads=1, calibration_s=2.4e-3)]
    assessed = assess(rows, meta)
    assert [r["time_trusted"] for r in assessed] == [True, True, False]
    assert "slow machine: calibration 1.26x" in assessed[2]["time_flags"]
    assert best_calibration({"calibration": [{"time_s_median": 5e-4}]}, rows, 1) == 5e-4  # an entry that does not say counts


def test_a_row_without_evidence_is_not_assessed():
    old = ok_row()
    del old["calibration_s"], old["host_busy"]
    assert row_flags(old, 1e-3) is None
    assert assess([old], {})[0]["time_trusted"] is None


def test_bimodal_needs_two_real_clusters():
    assert bimodal([80e-6] * 6 + [220e-6] * 6)  # thread wake-ups: two speeds in one process
    assert not bimodal([80e-6] * 11 + [220e-6])  # one outlier is noise, not a mode
    assert not bimodal([1.0, 1.01, 0.99, 1.02, 0.98])


def test_cross_cell_checks():
    def row(n, pass_, t):
        case = Case("naive", seq_len=n, pass_=pass_)
        return ok_row(case_id=case.id, **case.to_record(), time_s_median=t)
    rows = [row(256, "fwd", 1.0), row(256, "fwd_bwd", 0.01), row(512, "fwd", 0.1)]
    flags = cross_flags(rows)
    assert flags[1] == ["fwd_bwd faster than its own fwd"]
    assert "fwd slower than its own fwd_bwd" in flags[0] and any(f.startswith("drop") for f in flags[0])
    assessed = assess(rows, {"calibration": [{"time_s_median": 1e-3}]})
    assert [r["time_trusted"] for r in assessed] == [False, False, True]
    assert summary(assessed) == {"measured": 3, "trusted": 1, "flagged": 2, "not_assessed": 0,
                                 "flags": {"fwd slower than its own fwd_bwd": 1, "drop": 1,
                                           "fwd_bwd faster than its own fwd": 1}}
    assert json.loads(assessed[1]["time_flags"]) == ["fwd_bwd faster than its own fwd"]


def test_a_flagged_cell_is_measured_again_and_keeps_its_best_attempt(monkeypatch):
    results = iter([ok_row(time_s_iqr=5e-4), ok_row(host_busy=0.9), ok_row()])
    monkeypatch.setattr(executors, "measure", lambda *a, **k: dict(next(results)))
    monkeypatch.setattr(executors.InProcess, "_wait_for_quiet", lambda self, device, last: None)
    runner = executors.InProcess(build_config({"variants": ["naive"], "retries": 2, "trust_budget": math.inf}), {})
    rec = runner.metrics(Case("naive", seq_len=16, heads=1, head_dim=8))
    assert rec["attempts"] == 3 and rec["time_s_iqr"] == 1e-5 and rec["host_busy"] == 0.0
    runner = executors.InProcess(build_config({"variants": ["naive"], "retries": 0}), {})
    results = iter([ok_row(time_s_iqr=5e-4)])
    assert runner.metrics(Case("naive", seq_len=16, heads=1, head_dim=8))["attempts"] == 1
    runner = executors.InProcess(build_config({"variants": ["naive"], "retries": 2, "trust_budget": math.inf}), {})
    results = iter([ok_row(time_s_iqr=5e-4)])  # a planned round asks for none, whatever --retries says
    assert runner.metrics(Case("naive", seq_len=16, heads=1, head_dim=8), retries=0)["attempts"] == 1


def test_re_measurements_re_time_only_and_a_wrong_row_is_not_timed_again(monkeypatch):
    """Attempts after the first hand ``measure`` the first attempt's row (its memory and check are
    kept); an attempt whose output was wrong ends the attempts; a re-check's ``earlier`` row reaches
    every attempt."""
    seen = []

    def measure(*a, earlier=None, **k):
        seen.append(earlier)
        return ok_row(host_busy=0.9, rel_error=1e-7)

    monkeypatch.setattr(executors, "measure", measure)
    monkeypatch.setattr(executors.InProcess, "_wait_for_quiet", lambda self, device, last: None)
    runner = executors.InProcess(build_config({"variants": ["naive"], "retries": 2, "trust_budget": math.inf}), {})
    case = Case("naive", seq_len=16, heads=1, head_dim=8)
    assert runner.metrics(case)["attempts"] == 3
    assert seen[0] is None and seen[1]["host_busy"] == 0.9 and seen[2] is seen[1]
    seen.clear()
    old = ok_row(rel_error=2e-7)
    runner.metrics(case, old)
    assert seen[0] is old
    monkeypatch.setattr(executors, "measure", lambda *a, **k: {**ok_row(host_busy=0.9), "status": "wrong"})
    assert runner.metrics(case)["attempts"] == 1


def test_each_measurement_judges_its_samples_against_the_run_best_calibration_so_far(monkeypatch):
    """The run's start calibration seeds the best (by torch threads); every attempt is handed
    ``SLOW_CALIBRATION`` times the best so far, which each row's own calibration lowers."""
    seen = []

    def measure(*a, slow_above=None, **k):
        seen.append(slow_above)
        return ok_row(calibration_s=8e-4, torch_threads=2)

    monkeypatch.setattr(executors, "measure", measure)
    monkeypatch.setattr(executors.torch, "get_num_threads", lambda: 2)
    runner = executors.InProcess(build_config({"variants": ["naive"], "retries": 0}), {})
    case = Case("naive", seq_len=16, heads=1, head_dim=8)
    runner.metrics(case)
    assert seen == [None]  # nothing seen yet: no sample is judged slow
    runner = executors.InProcess(build_config({"variants": ["naive"], "retries": 0}), {})
    runner.seed_calibration({"calibration": [{"time_s_median": 1e-3, "threads": 2},
                                             {"time_s_median": 5e-4, "threads": 1}]}, [])
    runner.metrics(case)
    runner.metrics(case)
    assert seen[1:] == [pytest.approx(1.15e-3), pytest.approx(8e-4 * 1.15)]


def test_measure_with_an_earlier_row_keeps_its_memory_and_check(monkeypatch):
    from harness.bench import measure as measuring
    from harness.core.registry import get_variant

    def never(*a, **k):
        raise AssertionError("a re-measurement checked or measured memory again")

    case = Case("naive", seq_len=16, heads=1, head_dim=8)
    first = measuring.measure(get_variant("naive"), case, budget_s=0.001)
    monkeypatch.setattr(measuring, "check_case", never)
    monkeypatch.setattr(measuring, "peak_memory", never)
    again = measuring.measure(get_variant("naive"), case, budget_s=0.001, earlier=first)
    assert again["status"] == "ok" and again["time_s_median"] > 0
    assert {k: again[k] for k in measuring.UNTIMED_FIELDS} == {k: first[k] for k in measuring.UNTIMED_FIELDS}


def test_a_cell_flagged_only_for_page_faults_is_not_measured_again(monkeypatch):
    """Faults per call are the allocator's state, not a moment's load: measuring again cannot clear the
    flag, so it costs no retry; with another flag beside it, the retries run."""
    faulting = ok_row(time_fault_samples=[8192.0] * 10)
    monkeypatch.setattr(executors, "measure", lambda *a, **k: dict(faulting))
    monkeypatch.setattr(executors.InProcess, "_wait_for_quiet", lambda self, device, last: None)
    runner = executors.InProcess(build_config({"variants": ["naive"], "retries": 2, "trust_budget": math.inf}), {})
    case = Case("naive", seq_len=16, heads=1, head_dim=8)
    assert runner.metrics(case)["attempts"] == 1
    faulting["host_busy"] = 0.9
    assert runner.metrics(case)["attempts"] == 3


def test_timeout_bounds_each_attempt_and_an_overrun_retry_keeps_the_first(monkeypatch):
    def measure(*a, **k):
        if not calls:
            calls.append(1)
            return ok_row(host_busy=0.9)
        raise executors.CaseTimeout("case exceeded --timeout-s 1 s")

    calls = []
    monkeypatch.setattr(executors, "measure", measure)
    monkeypatch.setattr(executors.InProcess, "_wait_for_quiet", lambda self, device, last: None)
    runner = executors.InProcess(build_config({"variants": ["naive"], "retries": 2, "timeout_s": 1, "trust_budget": math.inf}), {})
    rec = runner.metrics(Case("naive", seq_len=16, heads=1, head_dim=8))
    assert rec["status"] == "ok" and rec["attempts"] == 1 and rec["host_busy"] == 0.9
    calls.append(1)  # now the first attempt overruns too: the case is a timeout row
    rec = runner.metrics(Case("naive", seq_len=16, heads=1, head_dim=8))
    assert rec["status"] == "timeout" and "timeout-s" in rec["reason"]
    from harness.run.alarm import WORKER_GRACE_S, case_limit_s
    from harness.run import quiet

    monkeypatch.setattr(quiet, "QUIET_WAIT_S", 5.0)  # the real bound (tests/conftest.py shortens it)
    QUIET_WAIT_S = quiet.QUIET_WAIT_S

    limit = case_limit_s(build_config({"timeout_s": 10, "retries": 2}).execution)
    assert limit == 10 * 3 + 2 * QUIET_WAIT_S + WORKER_GRACE_S


@pytest.mark.parametrize("flag,value", [("retries", "-1"), ("retries", "x"), ("rounds", "0"), ("rounds", "-2"),
                                        ("rounds", "x"), ("recheck-wait-s", "-1"), ("recheck-wait-s", "nan"),
                                        ("recheck-wait-s", "inf"), ("recheck-wait-s", "x")])
def test_bad_retries_rounds_or_recheck_wait_is_one_line(flag, value, capsys, tmp_path):
    try:
        code = main(["sweep", "--variants", "naive", f"--{flag}", value, "--out", str(tmp_path / "r")])
    except SystemExit as exc:  # argparse's own refusal, as one line
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert flag in err and len(err.strip().splitlines()) == 1


def test_threads_is_an_axis_recorded_in_every_row(tmp_path):
    from harness.run.sweep import run_sweep
    from harness.store.load import load_run

    config = build_config({"variants": ["naive"], "seq_lens": [32], "heads": [1], "head_dims": [8], "threads": [1, 2],
                           "budget_s": 0.01, "retries": 0, "ceiling_retries": 0,
                           "recheck_retries": 0})
    df, meta = load_run(run_sweep(config, out=tmp_path / "run", quiet=True))
    assert sorted(df["case_id"].str.rsplit("/", n=1).str[-1]) == ["t1", "t2"]
    assert df["threads"].tolist() == df["torch_threads"].tolist() == [1, 2]
    assert meta["trust"]["measured"] == 2 and "ceilings_measured" in meta
    assert [c["when"] for c in meta["ceilings_measured"]] == ["start", "end"]


def test_isolated_workers_judge_slow_samples_against_the_run_best_calibration(tmp_path, monkeypatch):
    """Each worker process is handed the run's best calibration so far (the start's, then its rows'):
    every row of an isolated sweep says which of its samples were slow."""
    from harness.run.sweep import run_sweep
    from harness.store.load import load_run

    jobs = []
    real = executors.WorkerProcess

    def worker(root, job):
        jobs.append(dict(job["best_calibration"]))
        return real(root, job)

    monkeypatch.setattr(executors, "WorkerProcess", worker)
    config = build_config({"variants": ["naive"], "seq_lens": [32, 64], "heads": [1], "head_dims": [8],
                           "budget_s": 0.01, "retries": 0, "ceiling_retries": 0, "recheck_retries": 0, "short_rounds": 1,
                           "isolate": True})
    df, meta = load_run(run_sweep(config, out=tmp_path / "run", quiet=True))
    assert df["isolated"].all() and all(len(list(v)) for v in df["time_slow"])
    start = meta["calibration"][0]
    assert jobs[0] == {start["threads"]: start["time_s_median"]} and len(jobs) == 2
    assert jobs[1][start["threads"]] == min(start["time_s_median"], df["calibration_s"].iloc[0])


def test_cross_cell_suspects_are_measured_again_and_keep_the_faster_measurement():
    from harness.analysis.trust import cross_suspects
    from harness.run.remeasure import Cells, remeasure_suspects

    fwd = Case("naive", seq_len=64, heads=1, head_dim=8)
    bwd = fwd.replace(pass_="fwd_bwd")
    long = fwd.replace(seq_len=128)
    rows = [{**ok_row(time_s_median=9e-3, attempts=1), "case_id": fwd.id, **fwd.to_record()},
            {**ok_row(time_s_median=3e-3), "case_id": bwd.id, **bwd.to_record()},
            {**ok_row(time_s_median=4e-3), "case_id": long.id, **long.to_record()}]
    assert cross_suspects(rows) == {0: "fwd slower than its own fwd_bwd"}  # the drop 9 -> 4 ms is < 2x

    class Runner:
        def __init__(self, median):
            self.median, self.calls = median, []

        def metrics(self, case, earlier=None, retries=None):
            self.calls.append(case.id)
            return ok_row(time_s_median=self.median, attempts=1)

    def record(case, metrics, wall_s):
        rows.append({"case_id": case.id, **case.to_record(), **metrics})

    runner = Runner(1e-3)
    remeasure_suspects(Cells(rows, {c.id: c for c in (fwd, bwd, long)}, runner, record, {"calibration": []}, quiet=True))
    assert runner.calls == [fwd.id] and len(rows) == 3 and rows[0]["case_id"] == fwd.id
    assert rows[0]["time_s_median"] == 1e-3 and rows[0]["attempts"] == 2
    assert rows[0]["remeasured_for"] == "fwd slower than its own fwd_bwd"
    assert cross_suspects(rows) == {}  # resolved, and never suspected twice
    rows[0].update(time_s_median=9e-3)  # still slow after its re-measurement: flagged, not measured again
    assert cross_suspects(rows) == {} and "fwd slower than its own fwd_bwd" in assess(rows, {})[0]["time_flags"]
    slower = Runner(20e-3)  # a re-measurement slower than the first keeps the first measurement
    rows[0] = {**ok_row(time_s_median=9e-3, attempts=1), "case_id": fwd.id, **fwd.to_record()}
    remeasure_suspects(Cells(rows, {c.id: c for c in (fwd, bwd, long)}, slower, record, {"calibration": []}, quiet=True))
    assert rows[0]["time_s_median"] == 9e-3 and rows[0]["attempts"] == 2 and rows[0]["remeasured_for"]


def test_a_short_multi_threaded_cpu_call_gets_its_rounds_share_of_the_budget(monkeypatch):
    """With --short-rounds above --rounds, ``measure`` is handed a call's budget by its length: budget_s x
    rounds / its rounds (``rounds_for``: --short-rounds under SHORT_BELOW_S, at most LONGER_ROUNDS under
    ROUND_BELOW_S); with one torch thread, on CUDA, or with --short-rounds 1, nothing."""
    from harness.analysis.rounds import ROUND_BELOW_S
    from harness.analysis.trust import SHORT_BELOW_S

    seen = []
    monkeypatch.setattr(executors, "measure", lambda *a, short=None, **k: seen.append(short) or ok_row())
    case = Case("naive", seq_len=16, heads=1, head_dim=8, threads=2)
    lengths = (0.9 * SHORT_BELOW_S, 1.1 * SHORT_BELOW_S, 0.9 * ROUND_BELOW_S, 1.1 * ROUND_BELOW_S)
    for options in ({}, {"short_rounds": 2}, {"short_rounds": 4, "rounds": 2}, {"short_rounds": 1}):
        config = build_config({"variants": ["naive"], "retries": 0, "budget_s": 0.6, **options})
        executors.InProcess(config, {}).metrics(case)
    budgets = [None if short is None else [short(s) for s in lengths] for short in seen]
    assert budgets == [pytest.approx([0.2, 0.3, 0.3, 0.6]), pytest.approx([0.3, 0.3, 0.3, 0.6]),
                       pytest.approx([0.3, 0.6, 0.6, 0.6]), None]
    seen.clear()
    executors.InProcess(build_config({"variants": ["naive"], "retries": 0}), {}).metrics(case.replace(threads=1))
    assert seen == [None]
