"""The sync probe: a short multi-threaded CPU call is judged by how fast its threads synchronized
right after its timing, against the run's best (the state that slows such calls while the
calibration matmul does not show it)."""

import copy
import math

import pytest
import torch

from harness.analysis.rounds import merge_round
from harness.analysis.trust import SHORT_CALL_S, SLOW_STATE, SLOW_SYNC, assess, best_calibration, row_flags
from harness.bench import host
from harness.bench.measure import measure
from harness.core.case import Case
from harness.core.registry import get_variant
from harness.run import executors, figures, quiet
from harness.run.remeasure import Cells, recheck_flagged
from harness.run.validate import build_config

BEST = 1e-4  # the run's best sync probe in these tests


def short_row(**changes):
    """A clean ok row of a 2 ms call on two CPU threads, its threads' sync at the run's best."""
    row = {"status": "ok", "device": "cpu", "torch_threads": 2, "time_s_median": 2e-3, "time_s_iqr": 2e-5,
           "time_n_samples": 10, "time_number_per_sample": 1, "time_samples_s": [2e-3] * 10,
           "calibration_s": 1e-3, "host_busy": 0.0, "ceiling_fraction": 0.3, "sync_s": BEST}
    return {**row, **changes}


def names(flags):
    return [f.split(":")[0] for f in flags]


def test_a_short_call_timed_while_its_threads_synchronized_slowly_is_slow_machine():
    flags = row_flags(short_row(sync_s=1.3 * BEST), 1e-3, BEST)
    assert names(flags) == ["slow machine"] and "threads synchronized 1.30x slower" in flags[0]
    assert row_flags(short_row(sync_s=1.1 * BEST), 1e-3, BEST) == []  # within SLOW_SYNC
    assert row_flags(short_row(sync_s=1.3 * BEST), 1e-3) == []  # no best sync yet: nothing to judge by
    assert row_flags({**short_row(), "sync_s": None}, 1e-3, BEST) == []  # not probed (one thread, a GPU)
    long = SHORT_CALL_S * SLOW_STATE * 2  # mostly arithmetic, which that state does not slow
    assert row_flags(short_row(sync_s=2 * BEST, time_s_median=long, time_samples_s=[long] * 10), 1e-3, BEST) == []
    # a slow calibration says it first: one "slow machine" flag, not two
    assert names(row_flags(short_row(sync_s=2 * BEST, calibration_s=2e-3), 1e-3, BEST)) == ["slow machine"]


def test_assess_judges_each_row_against_the_run_best_sync_on_its_threads():
    rows = [short_row(sync_s=1.3 * BEST), short_row(), short_row(torch_threads=4, sync_s=1.3 * BEST)]
    assert [r["time_trusted"] for r in assess(rows, {})] == [False, True, True]  # alone on 4 threads: its own best
    start = {"calibration": [{"time_s_median": 1e-3, "threads": 2, "sync_s": 0.8 * BEST}]}
    assert [r["time_trusted"] for r in assess(rows, start)] == [False, False, True]  # 1.25x the start's probe
    assert best_calibration(start, rows, 2, "sync_s") == 0.8 * BEST
    assert best_calibration(start, rows, 4, "sync_s") == 1.3 * BEST
    assert best_calibration({}, [{**short_row(), "sync_s": None}], 2, "sync_s") is None


def test_measure_probes_the_threads_sync_on_a_cpu_with_several_threads_only():
    case = Case("naive", seq_len=16, heads=1, head_dim=8)
    variant = get_variant("naive")
    with executors.torch_threads(2):
        rec = measure(variant, case, budget_s=0.01, min_samples=3)
        assert rec["torch_threads"] == 2 and rec["sync_s"] > 0
        assert "sync_s" not in measure(variant, case, budget_s=0.01, min_samples=3, timer=iter(range(10**6)).__next__)
        assert figures.calibrate("cpu", "start")["sync_s"] > 0  # run.json's entries carry it too
    with executors.torch_threads(1):
        assert "sync_s" not in measure(variant, case, budget_s=0.01, min_samples=3)
        assert "sync_s" not in figures.calibrate("cpu", "start")
    assert host.sync_probe(calls=3) > 0


def test_the_eta_judges_a_short_call_against_the_best_sync_on_its_own_threads():
    from harness.run.budget import TrustBudget
    from harness.run.eta import EndEstimate

    estimate = EndEstimate(10, TrustBudget(None), retries=2)
    estimate.seed({2: 1e-3}, {2: BEST})
    estimate.add(short_row(sync_s=1.5 * BEST))  # 2 threads: slow against the run's best
    estimate.add(short_row(torch_threads=4, sync_s=1.5 * BEST))  # 4 threads: the executor has no best there, nothing to judge it by
    assert estimate.flagged == 1


def test_the_wait_for_quiet_waits_for_the_sync_probe_when_asked(monkeypatch):
    probes = iter([2 * BEST, 1.5 * BEST, BEST])
    monkeypatch.setattr(quiet, "calibrate", lambda *a, **k: {"time_s_median": 1e-3})  # the matmul looks quiet
    monkeypatch.setattr(quiet, "sync_probe", lambda: next(probes))
    monkeypatch.setattr(quiet, "QUIET_POLL_S", 0.0)
    assert quiet.wait_for_quiet("cpu", 1e-3, limit_s=5.0, best_sync=BEST)
    assert next(probes, None) is None  # it probed until the threads were back within SLOW_SYNC
    assert quiet.wait_for_quiet("cpu", 1e-3, limit_s=5.0)  # not asked: the calibration alone decides
    monkeypatch.setattr(quiet, "sync_probe", lambda: 2 * BEST)
    assert not quiet.wait_for_quiet("cpu", 1e-3, limit_s=0.0, best_sync=BEST)


def test_a_retry_after_a_slow_sync_waits_for_the_threads_and_keeps_the_clean_attempt(monkeypatch):
    """The case runs on 2 threads: the run's best sync on 2 threads judges it, and the wait before its
    retry probes the threads too; a retry after another flag (host busy) waits for the calibration alone."""
    results = iter([short_row(sync_s=1.5 * BEST), short_row(sync_s=BEST, time_s_median=2.1e-3),
                    short_row(host_busy=0.9), short_row()])
    monkeypatch.setattr(executors, "measure", lambda *a, **k: dict(next(results)))
    runner = executors.InProcess(build_config({"variants": ["naive"], "retries": 1, "trust_budget": math.inf}), {})
    runner.seed_calibration({"calibration": [{"time_s_median": 1e-3, "threads": 2, "sync_s": BEST},
                                             {"time_s_median": 1e-3, "threads": 1, "sync_s": 10 * BEST}]}, [])
    waits = []
    runner.waiter = lambda device, best, limit_s=None, best_sync=None: waits.append(best_sync) or True
    case = Case("naive", seq_len=16, heads=1, head_dim=8, threads=2)
    rec = runner.metrics(case)
    assert waits == [BEST] and rec["attempts"] == 2 and rec["sync_s"] == BEST and rec["time_s_median"] == 2.1e-3
    assert runner.metrics(case)["attempts"] == 2 and waits == [BEST, None]


def test_isolated_workers_are_handed_the_run_best_sync(monkeypatch):
    jobs = []

    class Worker:
        def __init__(self, root, job):
            jobs.append(dict(job["best_sync"]))  # as sent: the worker reads it then

        def ask(self, message, limit_s):
            return short_row(sync_s=0.5 * BEST)

        def close(self):
            pass

    monkeypatch.setattr(executors, "WorkerProcess", Worker)
    runner = executors.Isolated(build_config({"variants": ["naive"], "isolate": True}), {})
    runner.seed_calibration({"calibration": [{"time_s_median": 1e-3, "threads": 2, "sync_s": BEST}]}, [])
    case = Case("naive", seq_len=16, heads=1, head_dim=8)
    runner.metrics(case)
    runner.metrics(case)
    assert jobs == [{2: BEST}, {2: 0.5 * BEST}]  # lowered by the first row


def test_a_round_whose_threads_synchronized_slowly_gives_way_to_a_clean_one_that_agrees():
    old, new = short_row(sync_s=1.5 * BEST), short_row(sync_s=BEST, time_s_median=2.1e-3)
    assert merge_round(old, new, 1e-3, BEST)["time_s_median"] == 2.1e-3
    assert merge_round(old, new, 1e-3)["time_s_median"] == 2e-3  # without a best sync: the faster round


def test_the_recheck_waits_for_the_threads_of_a_cell_their_sync_flags(monkeypatch):
    waits = []
    monkeypatch.setattr(quiet, "wait_for_quiet",
                        lambda device, best, limit_s=5.0, best_sync=None: waits.append(best_sync) or True)
    cases = [Case("naive", seq_len=16 * (i + 1), heads=1, head_dim=8) for i in range(2)]
    rows = [{**r, "case_id": c.id, **c.to_record()}
            for r, c in zip([short_row(sync_s=1.5 * BEST), short_row(host_busy=0.6)], cases)]
    rows = [{**r, "device": "cpu", "torch_threads": 2} for r in rows]

    class Runner:  # a clean round, slower than the flagged one but within 15% of it
        def metrics(self, case, earlier=None, retries=None):
            return copy.deepcopy(short_row(time_s_median=2.1e-3))

    meta = {"calibration": [{"time_s_median": 1e-3, "threads": 2, "sync_s": BEST}], "ceilings_flops_per_s": {}}
    record = lambda case, metrics, wall_s: rows.append({"case_id": case.id, **case.to_record(), **metrics})  # noqa: E731
    recheck_flagged(Cells(rows, {c.id: c for c in cases}, Runner(), record, meta, quiet=True), 1)
    assert waits == [BEST, None]  # the host-busy cell waits for the calibration alone
    assert [r["remeasured_for"] for r in rows] == ["round 2 (recheck: slow machine)", "round 2 (recheck: host busy)"]
    assert rows[0]["time_s_median"] == 2.1e-3 and rows[0]["sync_s"] == BEST  # the clean round kept
    assert rows[1]["time_s_median"] == 2.1e-3  # the host-busy round 2e-3 and the clean 2.1e-3 agree: the clean one


@pytest.mark.parametrize("ratio,flagged", [(SLOW_SYNC * 0.99, False), (SLOW_SYNC * 1.01, True)])
def test_the_bound_is_slow_sync(ratio, flagged):
    assert bool(row_flags(short_row(sync_s=ratio * BEST), 1e-3, BEST)) is flagged


def test_the_trust_summary_says_how_many_cells_met_the_state():
    from harness.analysis.trust import summary
    from harness.render.trust_text import evidence_clauses, sync_text

    long = SHORT_CALL_S * SLOW_STATE * 2
    rows = assess([short_row(), short_row(sync_s=1.5 * BEST),
                   short_row(sync_s=1.5 * BEST, time_s_median=long, time_samples_s=[long] * 10),
                   {**short_row(), "sync_s": None}], {})
    t = summary(rows)
    assert t["sync"] == {"cells": 3, "slow": 2, "flagged": 1}
    text = sync_text(t)
    assert text.startswith("beside 2 of 3 cells the threads synchronized more than 1.15x slower") and text in evidence_clauses(t)
    assert "(1 of them under 15 ms, flagged slow machine)" in text
    assert "sync" not in summary(assess([{**short_row(), "sync_s": None}], {})) and sync_text({}) == ""
    assert sync_text(summary(assess([short_row()], {}))) == ""  # probed, never slow: nothing to say


def test_a_worker_process_takes_the_best_sync_it_is_sent(monkeypatch):
    """The worker's side of an isolated case: the job's bests (JSON, so string keys) seed its executor."""
    import io

    from harness.run import worker

    made = []

    class Recorded(executors.InProcess):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(executors, "InProcess", Recorded)
    monkeypatch.setattr(worker, "_reply", lambda message: None)
    monkeypatch.setattr("sys.stdin", io.StringIO('{"quit": true}\n'))
    config = build_config({"variants": ["naive"], "isolate": True}).to_dict()
    worker.sweep_mode({"config": config, "best_calibration": {"2": 1e-3}, "best_sync": {"2": BEST}})
    assert made[0].best_sync == {2: BEST} and made[0].best_calibration == {2: 1e-3}
