"""Plain progress lines: every 5% or every 10 s, with elapsed time and an ETA; none when quiet."""

from __future__ import annotations

import io

import pytest

from harness.core.case import Case
from harness.run.progress import Progress


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_plain_progress_lines_every_so_often():
    stream, clock = io.StringIO(), _Clock()
    progress = Progress(total=200, done=0, quiet=False, stream=stream, clock=clock)
    case = Case("naive")
    for i in range(200):
        progress.show(case)
        clock.t += 0.5  # 100 s in all: every 5% (10 cases, 5 s) comes first
        progress.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20 and lines[0].startswith("case 10/200 (5%), elapsed 0:00:05, ETA 0:01:35, last: naive/")
    assert lines[-1].startswith("case 200/200 (100%), elapsed 0:01:40, ETA 0:00:00")

    stream, clock = io.StringIO(), _Clock()
    progress = Progress(total=10_000, done=5_000, quiet=False, stream=stream, clock=clock)
    for _ in range(30):
        clock.t += 1.0  # slow cases: a line every 10 s
        progress.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("case 5010/10000 (50%), elapsed 0:00:10, ETA 1:23:10")

    stream = io.StringIO()
    quiet = Progress(total=3, done=0, quiet=True, stream=stream, clock=_Clock())
    for _ in range(3):
        quiet.advance()
    assert stream.getvalue() == ""


def test_work_the_trust_budget_bounds_has_an_eta_of_at_most_what_it_has_left():
    """A re-check whose pace says 20 more minutes, with 40 s of trust budget left, says 40 s and why;
    with more budget than the pace needs, the pace's ETA."""
    stream, clock = io.StringIO(), _Clock()
    left = [40.0]
    progress = Progress(total=100, done=0, quiet=False, stream=stream, clock=clock, bound_s=lambda: left[0])
    clock.t = 12.0
    progress.advance()  # 12 s a cell: 99 more take 19:48
    assert "ETA 0:00:40 at most (the trust budget left)" in stream.getvalue().splitlines()[-1]
    left[0] = 10_000.0
    clock.t = 24.0
    progress.advance()
    assert stream.getvalue().splitlines()[-1].endswith("ETA 0:19:36")  # 12 s a cell, 98 more


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_bar_and_the_line_bound_the_eta_alike_and_an_unbounded_budget_is_no_bound():
    """On a terminal the bar names the bound only when it is shorter than the pace's estimate, as the
    plain line does; an unbounded trust budget (``--trust-budget inf``: ``left_s`` is infinite) is no
    bound on either."""
    import math

    clock, left = _Clock(), [40.0]
    bar = Progress(total=100, done=0, quiet=False, stream=_Terminal(), clock=clock, bound_s=lambda: left[0])
    try:
        clock.t = 12.0
        bar.advance()  # the pace says 19:48 more
        assert bar.bar.tasks[0].fields["after"] == "at most 0:00:40 (the trust budget left)"
        left[0] = 10_000.0
        clock.t = 24.0
        bar.advance()
        assert bar.bar.tasks[0].fields["after"] == ""
        left[0] = math.inf
        bar.advance()
        assert bar.bar.tasks[0].fields["after"] == ""
    finally:
        bar.close()
    stream = io.StringIO()
    line = Progress(total=100, done=0, quiet=False, stream=stream, clock=_Clock(), bound_s=lambda: math.inf)
    assert line.line(0.0).startswith("case 0/100 (0%), elapsed 0:00:00, ETA unknown")


def test_the_eta_includes_the_recheck_it_expects():
    """Half the cells measured so far are flagged (noisy), each 1 s to re-measure: the ETA of a 100-cell
    run adds about 50 s of re-checking; a bounded trust budget caps that, and no re-checks means none."""
    from harness.run.budget import TrustBudget
    from harness.run.eta import PROBE_S, EndEstimate

    clean = {"status": "ok", "time_s_median": 0.1, "time_s_iqr": 0.0, "time_n_samples": 8,
             "time_number_per_sample": 1, "calibration_s": 1e-3, "host_busy": 0.0}
    noisy = {**clean, "time_s_iqr": 0.05}
    estimate = EndEstimate(100, TrustBudget(None), retries=2)
    for row in (clean, noisy) * 5:
        estimate.add(row)
    per = 0.1 * (8 + 2) + PROBE_S
    assert estimate.seconds() == 50 * per
    stream, clock = io.StringIO(), _Clock()
    progress = Progress(total=100, done=0, quiet=False, stream=stream, clock=clock, after_s=estimate.seconds)
    clock.t = 10.0
    for _ in range(10):
        progress.advance()
    assert f"ETA 0:{int(90 + 50 * per) // 60:02d}:{int(90 + 50 * per) % 60:02d} (0:01:15 of it re-measuring)" in stream.getvalue()
    bounded = TrustBudget(0.1)
    bounded.add_base(10.0)  # a tenth of the run: 100 s of first pass in all, so 10 s of budget
    capped = EndEstimate(100, bounded, retries=2)
    for row in (clean, noisy) * 5:
        capped.add(row)
    assert capped.seconds() == 10.0
    assert EndEstimate(100, TrustBudget(None), retries=0).seconds() == 0.0


def test_the_eta_includes_the_planned_rounds():
    """Short CPU calls are measured in two rounds (--short-rounds 2): of 10 rows so far, 5 are short
    (1 ms) and 5 long (100 ms), none flagged; a 100-cell run adds one more measurement of 50 short cells."""
    from harness.run.budget import TrustBudget
    from harness.run.eta import PROBE_S, EndEstimate, retime_s

    clean = {"status": "ok", "device": "cpu", "time_s_iqr": 0.0, "time_n_samples": 8,
             "time_number_per_sample": 1, "calibration_s": 1e-3, "host_busy": 0.0}
    short, long = {**clean, "time_s_median": 1e-3}, {**clean, "time_s_median": 0.1}
    estimate = EndEstimate(100, TrustBudget(None), retries=2, rounds=1, short_rounds=2)
    for row in (short, long) * 5:
        estimate.add(row)
    assert retime_s(short) == 1e-3 * 10 + PROBE_S and retime_s(short, probe=False) == 1e-3 * 10
    assert estimate.seconds() == pytest.approx(50 * retime_s(short, probe=False))
    in_rounds = EndEstimate(100, TrustBudget(None), retries=2, rounds=3, short_rounds=2)
    for row in (short, long) * 5:
        in_rounds.add(row)
    assert in_rounds.seconds() == pytest.approx(100 * (retime_s(short, False) + retime_s(long, False)))  # two more rounds of every cell
    once = EndEstimate(100, TrustBudget(None), retries=2, rounds=1, short_rounds=1)
    for row in (short, long) * 5:
        once.add(row)
    assert once.seconds() == 0.0
    resumed = EndEstimate(0, TrustBudget(None), retries=2, rounds=1, short_rounds=2)  # nothing left to measure ...
    resumed.owe([short, {**short, "time_rounds_s": [1e-3, 1.1e-3]}, long, {**short, "status": "error"}])
    assert resumed.seconds() == pytest.approx(retime_s(short, probe=False))  # ... but one short cell owes a round
