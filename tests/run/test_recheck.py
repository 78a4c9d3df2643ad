"""The end of a run: cells still flagged are re-checked as one more round once the machine is quiet,
ceilings that cells exceed are measured again, and the waits for quiet stay within their budget."""

import copy
import json

import pytest

from harness.analysis.trust import assess, cross_suspects
from harness.core.case import Case
from harness.core.errors import InputError
from harness.run import figures, quiet
from harness.run.remeasure import Cells, more_rounds, recheck_flagged
from harness.run.validate import build_config
from harness.store.load import load_run

REAL_QUIET_WAIT_S = 5.0  # harness.run.quiet's, which tests/conftest.py shortens for real sweeps


@pytest.fixture(autouse=True)
def _real_quiet_wait(monkeypatch):
    """These tests are of the waiting itself, on fake clocks and calibrations: the real bound applies."""
    monkeypatch.setattr(quiet, "QUIET_WAIT_S", REAL_QUIET_WAIT_S)


class FakeRunner:
    """Stands in for the runner the re-check measures with: every call returns a copy of `row`."""

    def __init__(self, row):
        self.row, self.calls, self.retries = row, [], []

    def metrics(self, case, earlier=None, retries=None):
        self.calls.append(case.id)
        self.retries.append(retries)
        return copy.deepcopy(self.row)


def _rows_and_cases(*rows):
    cases = [Case("naive", seq_len=16 * (i + 1), heads=1, head_dim=8) for i in range(len(rows))]
    return ([{**r, "case_id": c.id, **c.to_record()} for r, c in zip(rows, cases)], {c.id: c for c in cases})


def test_cells_still_flagged_at_the_end_are_rechecked_once_as_one_more_round(measured, monkeypatch):
    from harness.run import sweep

    monkeypatch.setattr(quiet, "wait_for_quiet", lambda device, best, limit_s=5.0, best_sync=None: True)
    rows, by_id = _rows_and_cases(measured(1e-3), measured(1e-3, host_busy=0.6), measured(1e-3, time_s_iqr=5e-4))
    meta = {"calibration": [], "ceilings_flops_per_s": {}}
    written = []

    def record(case, metrics, wall_s):
        written.append(case.id)
        rows.append({"case_id": case.id, **case.to_record(), **metrics})

    runner = FakeRunner(measured(1.05e-3))
    recheck_flagged(Cells(rows, by_id, runner, record, meta, quiet=True), 1)
    assert runner.calls == [rows[1]["case_id"], rows[2]["case_id"]] == written  # the clean cell is left alone
    assert rows[1]["remeasured_for"] == "round 2 (recheck: host busy)" and rows[1]["time_rounds_s"] == [1e-3, 1.05e-3]
    assert rows[1]["time_s_median"] == 1.05e-3 and rows[1]["host_busy"] == 0.0  # the clean round that agrees
    assert rows[2]["remeasured_for"] == "round 2 (recheck: noisy)"
    assessed = assess(rows, meta)
    assert [r["time_trusted"] for r in assessed] == [True, True, True]
    # A row is re-checked once: a resume (or a second call) leaves it alone, still flagged if it is.
    rows[1].update(host_busy=0.7)
    recheck_flagged(Cells(rows, by_id, runner, record, meta, quiet=True), 1)
    assert len(runner.calls) == 2 and assess(rows, meta)[1]["time_trusted"] is False
    # --retries 0: no re-measurement at all.
    rows, by_id = _rows_and_cases(measured(1e-3, host_busy=0.6))
    recheck_flagged(Cells(rows, by_id, runner, record, meta, quiet=True), 0)
    assert len(runner.calls) == 2


def test_a_planned_round_is_one_measurement_and_spends_no_trust_budget(measured):
    """A short CPU cell's second round (--short-rounds) asks the runner for no retries, even of a flagged
    measurement: clearing flags is the re-check's, after a slow spell has had time to pass. The trust
    budget is untouched; the long cell gets no second round."""
    from harness.run.budget import TrustBudget

    rows, by_id = _rows_and_cases(measured(1e-3, device="cpu"), measured(0.1, device="cpu"))
    budget = TrustBudget(0.5)
    written = []

    def record(case, metrics, wall_s):
        written.append(case.id)
        rows.append({"case_id": case.id, **case.to_record(), **metrics})

    runner = FakeRunner(measured(1.1e-3, time_s_iqr=5e-4))  # a noisy round
    more_rounds(Cells(rows, by_id, runner, record, {"calibration": []}, True, budget), 1, 2)
    assert runner.calls == written == [rows[0]["case_id"]] and runner.retries == [0]
    assert rows[0]["time_rounds_s"] == [1e-3, 1.1e-3] and rows[0]["remeasured_for"] == "round 2"
    assert budget.spent_s == 0.0 and budget.refused == 0


def test_a_recheck_that_disagrees_leaves_the_cell_unreproduced(measured, monkeypatch):
    from harness.run import sweep

    monkeypatch.setattr(quiet, "wait_for_quiet", lambda device, best, limit_s=5.0, best_sync=None: True)
    rows, by_id = _rows_and_cases(measured(1e-3, host_busy=0.6))
    runner = FakeRunner(measured(2e-3))
    recheck_flagged(Cells(rows, by_id, runner, lambda c, m, w: rows.append({**rows[0], **m}),
                          {"calibration": [], "ceilings_flops_per_s": {}}, quiet=True), 2)
    flags = json.loads(assess(rows, {})[0]["time_flags"])
    assert rows[0]["time_s_median"] == 1e-3 and {f.split(":")[0] for f in flags} == {"host busy", "unreproduced"}
    assert len(runner.calls) == 2  # still flagged after both: re-checked --retries times, no more


def test_a_ceiling_cells_exceed_is_measured_again_once_the_machine_is_quiet(measured, monkeypatch):
    from harness.run import sweep

    readings = iter([{"float32": 1e9}, {"float32": 3e9}, {"float32": 5e9}])
    waits = []
    monkeypatch.setattr(figures, "measure_ceilings", lambda device, dtypes, quiet: next(readings))
    monkeypatch.setattr(figures, "calibrate", lambda device, when: {"when": when, "time_s_median": 1e-3})
    monkeypatch.setattr(quiet, "wait_for_quiet", lambda device, best, limit_s=5.0, best_sync=None: waits.append(best) or True)
    rows = [{**measured(1e-3, flops_per_s=2e9), "dtype": "float32"}]
    meta = {"calibration": [], "ceilings_flops_per_s": {"float32": 0.5e9}}
    figures.measure_end(meta, rows, "cpu", ["float32"], retries=2, quiet=True)
    # 2e9 FLOP/s is above the end's 1e9 ceiling: measured again after waiting for quiet; 3e9 settles it.
    assert meta["ceilings_flops_per_s"]["float32"] == 3e9 and waits == [1e-3]
    assert [m["when"] for m in meta["ceilings_measured"]] == ["end", "end, again: 1 cell(s) above it"]
    assert figures.above_ceiling(rows, meta["ceilings_flops_per_s"]) == 0


def test_after_a_wait_for_quiet_that_ran_out_the_next_waits_only_probe(monkeypatch):

    readings = []  # calibration medians the probes will read, in order
    monkeypatch.setattr(quiet, "calibrate", lambda device, budget_s, min_samples: {"time_s_median": readings.pop(0)})
    monkeypatch.setattr(quiet.time, "sleep", lambda s: None)
    clock = iter(range(10**6))  # one second per reading of the clock
    monkeypatch.setattr(quiet.time, "perf_counter", lambda: float(next(clock)))
    wait = quiet.QuietWaiter()
    readings[:] = [2e-3] * 10
    assert wait("cpu", 1e-3) is False and wait.missed and len(readings) == 5  # probed for QUIET_WAIT_S
    assert wait("cpu", 1e-3) is False and len(readings) == 4  # then a single probe
    assert wait("cpu", None) is False and wait.missed and len(readings) == 4  # no best yet: no probe, nothing learned
    readings[:] = [1e-3, 2e-3, 2e-3, 2e-3, 1e-3]
    assert wait("cpu", 1e-3) is True and not wait.missed  # quiet again: the next wait is a full one
    assert wait("cpu", 1e-3) is True and readings == []


def test_a_wait_budget_waits_out_a_slow_spell_then_stops_at_its_bound(monkeypatch):
    """--recheck-wait-s: a wait that runs out goes on, all waits together within the budget, until the
    machine comes back; once the budget is spent, the waits are single probes again."""

    readings = []  # calibration medians the probes will read, in order
    monkeypatch.setattr(quiet, "calibrate", lambda device, budget_s, min_samples: {"time_s_median": readings.pop(0)})
    monkeypatch.setattr(quiet.time, "sleep", lambda s: None)
    clock = iter(range(10**6))  # one second per reading of the clock
    monkeypatch.setattr(quiet.time, "perf_counter", lambda: float(next(clock)))
    said = []
    wait = quiet.QuietWaiter(budget_s=30.0, log=said.append)
    readings[:] = [2e-3] * 12 + [1e-3, 2e-3]  # slow for 12 probes (past the 5 s wait), then back
    assert wait("cpu", 1e-3) is True and not wait.missed and readings == [2e-3]
    assert 12 < wait.waited_s < 30 and len(said) == 2
    assert "waiting up to" in said[0] and "--recheck-wait-s 30" in said[0] and "came back" in said[1]
    readings[:] = [1e-3]  # quiet: one probe, no long wait, nothing said
    assert wait("cpu", 1e-3) is True and len(said) == 2
    spent = wait.waited_s
    readings[:] = [2e-3] * 100  # slow for good: waits out the rest of the budget, then gives up
    assert wait("cpu", 1e-3) is False and wait.missed and "stayed slow" in said[-1]
    # Within the budget but for the waiter's own readings of this clock (a second each here).
    assert 30 <= wait.waited_s <= 36 and 100 - len(readings) < 30 - spent
    left = len(readings)
    assert wait("cpu", 1e-3) is False and len(readings) == left - 1  # the budget is spent: a single probe
    readings[:] = [1e-3] + [2e-3] * 20
    assert wait("cpu", 1e-3) is True and not wait.missed  # back: the next wait would be a full one ...
    spent = wait.waited_s
    assert wait("cpu", 1e-3) is False and len(readings) == 19  # ... but for the budget, spent: a single probe
    assert wait.waited_s - spent <= 4  # the waiter's own readings of this clock, a second each
    # No budget (every other waiter): a wait that runs out is not extended.
    plain = quiet.QuietWaiter()
    readings[:] = [2e-3] * 20
    assert plain("cpu", 1e-3) is False and len(readings) == 15


def test_the_recheck_wait_budget_scales_with_the_run_within_bounds():
    from harness.run.quiet import RECHECK_WAIT_MAX_S, recheck_wait_budget_s
    QUIET_WAIT_S = REAL_QUIET_WAIT_S

    default = build_config({}).execution
    assert recheck_wait_budget_s(default, 10.0) == QUIET_WAIT_S  # a short run: the single wait it always had
    assert recheck_wait_budget_s(default, 600.0) == pytest.approx(90.0)  # 15% of the cases' time
    assert recheck_wait_budget_s(default, 10**5) == RECHECK_WAIT_MAX_S
    assert recheck_wait_budget_s(build_config({"recheck_wait_s": 0}).execution, 600.0) == 0.0
    assert recheck_wait_budget_s(build_config({"recheck_wait_s": 42}).execution, 1.0) == 42.0
    for bad in (-1, float("nan"), float("inf"), "x", True):
        with pytest.raises(InputError, match="recheck_wait_s must be"):
            build_config({"recheck_wait_s": bad})


def test_with_a_wait_budget_cells_flagged_only_slow_are_measured_once_the_machine_is_back(measured, monkeypatch):
    """The machine is slow when the re-check starts: its first wait runs out, and where no budget would
    give up on the cells flagged only 'slow machine', a budget waits on until the machine is back and
    re-checks them all; run.json records the budget and the time waited."""
    from harness.run import sweep

    limits = []
    probes = iter([False, True, True, True])  # the 5 s wait runs out; the longer one sees the machine back

    def fake_wait(device, best, limit_s=5.0, best_sync=None):
        limits.append(limit_s)
        return next(probes)

    monkeypatch.setattr(quiet, "wait_for_quiet", fake_wait)
    slow = dict(calibration_s=1.5e-3)
    rows, by_id = _rows_and_cases(measured(1e-3, **slow), measured(1e-3, **slow), measured(1e-3, **slow))
    meta = {"calibration": [{"time_s_median": 1e-3}], "ceilings_flops_per_s": {}}
    runner = FakeRunner(measured(1e-3, calibration_s=1e-3))

    def record(case, metrics, wall_s):
        rows.append({"case_id": case.id, **case.to_record(), **metrics})

    ids = [r["case_id"] for r in rows]
    recheck_flagged(Cells(rows, by_id, runner, record, meta, quiet=True), 1, wait_s=60.0)
    assert runner.calls == ids and limits[0] == quiet.QUIET_WAIT_S and 59 < limits[1] <= 60
    assert limits[2:] == [quiet.QUIET_WAIT_S] * 2  # back: each cell's wait is the usual one
    assert [r["time_trusted"] for r in assess(rows, meta)] == [True] * 3
    assert meta["recheck_wait"]["budget_s"] == 60.0 and "waited_s" in meta["recheck_wait"]


def test_the_time_the_recheck_waited_is_part_of_the_runs_trust(measured, tmp_path):
    from harness.cli.show import trust_line
    from harness.render.trust_text import wait_text
    from harness.run import sweep

    rows, _ = _rows_and_cases(measured(1e-3))
    meta = {"schema_version": 3, "run_id": "r", "calibration": [], "ceilings_flops_per_s": {}, "sweep": {}, "provenance": {},
            "recheck_wait": {"budget_s": 135.0, "waited_s": 42.4}}
    sweep._finish(tmp_path, meta, [{"run_id": "r", **r} for r in rows], "complete", quiet=True)
    _, stored = load_run(tmp_path)
    assert stored["trust"]["recheck_wait"] == {"budget_s": 135.0, "waited_s": 42.4} and "recheck_wait" not in stored
    sweep._finish(tmp_path, stored, [{"run_id": "r", **r} for r in rows], "complete", quiet=True)
    assert load_run(tmp_path)[1]["trust"]["recheck_wait"]["waited_s"] == 42.4  # a resume that waited not keeps it
    assert ("the end-of-run re-check waited 42 s (of up to 135 s, --recheck-wait-s) for the machine to come back"
            in trust_line(stored["trust"]))
    # A re-check that only probed (under a second), none at all, or a damaged entry: no clause.
    assert wait_text({"recheck_wait": {"budget_s": 5.0, "waited_s": 0.3}}) == wait_text({}) == ""
    assert wait_text({"recheck_wait": "x"}) == wait_text({"recheck_wait": {"waited_s": None}}) == ""


def test_a_cell_still_flagged_after_its_recheck_is_rechecked_up_to_retries_times(measured, monkeypatch):
    from harness.run import sweep

    monkeypatch.setattr(quiet, "wait_for_quiet", lambda device, best, limit_s=5.0, best_sync=None: True)
    rows, by_id = _rows_and_cases(measured(1e-3, host_busy=0.6), measured(1e-3, time_s_iqr=5e-4))
    runner = FakeRunner(measured(1.05e-3))
    replies = iter([measured(3e-3, host_busy=0.6), measured(1.05e-3), measured(1.05e-3)])
    runner.metrics = lambda case, earlier=None, retries=None: runner.calls.append(case.id) or next(replies)

    def record(case, metrics, wall_s):
        rows.append({"case_id": case.id, **case.to_record(), **metrics})

    recheck_flagged(Cells(rows, by_id, runner, record, {"calibration": [], "ceilings_flops_per_s": {}}, quiet=True), 3)
    # Pass 1 re-checks both; only the first is still flagged (its recheck read 3 ms, busy), so pass 2 re-checks it.
    assert runner.calls == [rows[0]["case_id"], rows[1]["case_id"], rows[0]["case_id"]]
    assert rows[0]["remeasured_for"] == "round 3 (recheck: host busy, unreproduced)"
    assert rows[0]["time_rounds_s"] == [1e-3, 3e-3, 1.05e-3] and rows[0]["time_s_median"] == 1.05e-3
    assert [r["time_trusted"] for r in assess(rows, {})] == [True, True]


def test_a_cell_a_recheck_leaves_slow_by_lowering_the_best_is_rechecked_too(measured, monkeypatch):
    """A re-check can lower the run's best calibration: a cell that was clean against the old best and
    reads more than 15% slower than the new one is re-checked in the next pass (its first), even with
    --retries 1; every cell is still re-checked at most --retries times."""
    from harness.run import sweep

    monkeypatch.setattr(quiet, "wait_for_quiet", lambda device, best, limit_s=5.0, best_sync=None: True)
    rows, by_id = _rows_and_cases(measured(1e-3, host_busy=0.6), measured(1e-3, calibration_s=1.1e-3))
    meta = {"calibration": [{"time_s_median": 1e-3}], "ceilings_flops_per_s": {}}
    runner = FakeRunner(measured(1e-3, calibration_s=0.9e-3))  # every re-check finds the machine faster than ever

    def record(case, metrics, wall_s):
        rows.append({"case_id": case.id, **case.to_record(), **metrics})

    ids = [r["case_id"] for r in rows]
    assert assess(rows, meta)[1]["time_trusted"] is True  # 1.1x the best: clean before the re-check
    recheck_flagged(Cells(rows, by_id, runner, record, meta, quiet=True), 1)
    assert runner.calls == ids and rows[1]["remeasured_for"] == "round 2 (recheck: slow machine)"
    assert [r["time_trusted"] for r in assess(rows, meta)] == [True, True]


def test_end_of_run_details_the_recheck_relies_on(measured, monkeypatch):
    from harness.analysis.rounds import own_flags
    from harness.run import sweep

    # The best ceilings are updated in place: the runner that measures the re-checks holds that dict.
    meta = {"ceilings_flops_per_s": {"float32": 1e9}}
    held = meta["ceilings_flops_per_s"]
    figures.keep_best_ceilings(meta, {"float32": 3e9}, "end")
    assert held is meta["ceilings_flops_per_s"] and held["float32"] == 3e9
    # A probe that fails is no evidence of quiet, and no crash.
    monkeypatch.setattr(quiet, "calibrate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("CUDA error")))
    assert quiet.wait_for_quiet("cuda", 1e-3) is False
    # A re-checked row is not suspected again by a cross-cell check (a resume would otherwise re-measure it).
    fwd = Case("naive", seq_len=64, heads=1, head_dim=8)
    rows = [{**measured(9e-3), "case_id": fwd.id, **fwd.to_record(), "remeasured_for": "round 3 (recheck: noisy)"},
            {**measured(3e-3), "case_id": fwd.replace(pass_="fwd_bwd").id, **fwd.replace(pass_="fwd_bwd").to_record()}]
    assert cross_suspects(rows) == {}
    # A measurement without evidence (a row from before it) never counts as the clean one.
    assert own_flags({"status": "ok", "time_s_median": 1e-3}, 1e-3) == ["no evidence"]


def test_once_the_machine_stays_slow_cells_flagged_only_slow_are_not_rechecked(measured, monkeypatch):
    """The first wait for quiet runs out (the machine stays slow): the next cell flagged only 'slow
    machine' gets one probe, still slow, and is skipped; a cell with another flag is re-checked all the
    same; a probe that finds the machine quiet again has the next slow-only cell re-checked."""
    from harness.run import sweep

    probes = iter([False, False, False, True])
    monkeypatch.setattr(quiet, "wait_for_quiet", lambda device, best, limit_s=5.0, best_sync=None: next(probes))
    slow = dict(calibration_s=1.5e-3)
    rows, by_id = _rows_and_cases(measured(1e-3, **slow), measured(1e-3, **slow),
                                  measured(1e-3, host_busy=0.6, **slow), measured(1e-3, **slow))
    meta = {"calibration": [{"time_s_median": 1e-3}], "ceilings_flops_per_s": {}}
    runner = FakeRunner(measured(1e-3, **slow))

    def record(case, metrics, wall_s):
        rows.append({"case_id": case.id, **case.to_record(), **metrics})

    ids = [r["case_id"] for r in rows]
    recheck_flagged(Cells(rows, by_id, runner, record, meta, quiet=True), 1)
    assert runner.calls == [ids[0], ids[2], ids[3]]
    assert rows[1].get("remeasured_for") is None and all("recheck" in rows[i]["remeasured_for"] for i in (0, 2, 3))
