"""The trust budget: re-measuring and waiting draw on one budget that only the first pass grows. On a
fake clock and a fake measurer: nothing here times anything."""

from __future__ import annotations

import pytest

from harness.core.case import Case
from harness.run import executors
from harness.run.budget import TrustBudget
from harness.run.validate import build_config


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_budget_grows_with_the_first_pass_only_and_keeps_half_for_the_recheck():
    clock = FakeClock()
    budget = TrustBudget(0.5, clock=clock)
    budget.add_base(10.0)
    assert budget.allowed_s == 5.0 and budget.left_s() == pytest.approx(2.5) and budget.allows()
    with budget.spend():
        clock.t += 2.0
    assert budget.left_s() == pytest.approx(0.5) and budget.allows()
    with budget.spend():
        clock.t += 1.0
    assert not budget.allows() and budget.refused == 1  # the first pass spent its half
    budget.first_pass = False
    budget.add_base(100.0)  # a re-measurement never grows it
    assert budget.allowed_s == 5.0 and budget.left_s() == pytest.approx(2.0) and budget.allows()
    with budget.spend():
        clock.t += 3.0
    assert not budget.allows() and budget.refused == 2
    summary = budget.summary()
    assert summary == {"fraction": 0.5, "first_pass_s": 10.0, "allowed_s": 5.0, "spent_s": 6.0, "refused": 2,
                       "spent": True}
    resumed = TrustBudget(0.5)
    resumed.merge(summary)
    assert (resumed.base_s, resumed.spent_s, resumed.refused) == (10.0, 6.0, 2)


def test_a_spent_budget_stops_the_attempts_of_a_flagged_cell(monkeypatch):
    """Every attempt is flagged (noisy) and takes 1 s of the fake clock; a budget of 2x the first pass gives
    the first pass 1 s (its half): the first re-measurement is allowed, the second refused, whatever
    --retries says."""
    clock = FakeClock()
    calls = []

    def fake_measure(variant, case, budget_s, *args, **kwargs):
        calls.append(case.id)
        clock.t += 1.0
        return {"status": "ok", "reason": "", "time_s_median": 1e-3, "time_s_iqr": 5e-4, "time_n_samples": 50,
                "time_number_per_sample": 1, "calibration_s": 1e-3, "host_busy": 0.0}

    monkeypatch.setattr(executors, "measure", fake_measure)
    config = build_config({"variants": ["naive"], "retries": 5, "trust_budget": 2.0})
    runner = executors.InProcess(config, {}, TrustBudget(2.0, clock=clock))
    monkeypatch.setattr(runner, "_wait_for_quiet", lambda device, last: None)
    row = runner.metrics(Case("naive", seq_len=16, heads=1, head_dim=8))
    assert row["status"] == "ok" and row["attempts"] == 2 and len(calls) == 2
    assert runner.budget.refused == 1 and runner.budget.base_s == 1.0
    runner.budget.first_pass = False  # the re-check's half: 1 s
    calls.clear()
    again = runner.metrics(Case("naive", seq_len=32, heads=1, head_dim=8))
    assert again["attempts"] == 2 and len(calls) == 2
    calls.clear()
    again = runner.metrics(Case("naive", seq_len=48, heads=1, head_dim=8))
    assert again["attempts"] == 1 and len(calls) == 1  # spent: measured once, flags kept


def test_zero_is_a_budget_and_a_bad_value_is_refused():
    config = build_config({"trust_budget": 0})
    assert config.execution.trust_budget == 0.0
    assert build_config({}).execution.trust_budget == 0.5  # bounded unless asked otherwise
    assert build_config({"trust_budget": float("inf")}).execution.trust_budget is None  # unbounded
    for bad in (-1, float("nan"), "1"):
        with pytest.raises(Exception, match="trust_budget"):
            build_config({"trust_budget": bad})
