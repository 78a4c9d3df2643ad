"""How long a run's end will take: its planned rounds and the end-of-run re-check, estimated while the
cases are measured, so that the progress line's ETA covers the whole run and not only its first pass."""

from __future__ import annotations

import math

from harness.analysis.rounds import rounds_done, rounds_wanted
from harness.analysis.trust import number, row_flags, worth_remeasuring
from harness.run.budget import TrustBudget

PROBE_S = 0.5  # a re-check's wait for quiet: one probe of the calibration kernel, at least


def retime_s(row: dict, probe: bool = True) -> float:
    """What measuring an ok row's case again takes: its timed calls, two warm-up calls and, for a
    re-check (``probe``), a probe of the machine's speed first."""
    median = number(row.get("time_s_median")) or 0.0
    calls = (number(row.get("time_n_samples")) or 0.0) * (number(row.get("time_number_per_sample")) or 1.0)
    return median * (calls + 2) + (PROBE_S if probe else 0.0)


class EndEstimate:
    """The run's end's likely seconds, from the rows measured so far, scaled to the cells of the whole
    run: its planned rounds (``rounds``, ``short_rounds``: harness.analysis.rounds.rounds_wanted), each
    row's time to measure it again (no probe) once per round to come, with those a resume's rows still
    owe (``owe``); and its re-check, the share of rows still flagged (by their own evidence, against
    the run's best calibration and sync probe on their torch threads: ``seed``) times the mean time to
    re-measure one of them, once, at most what the trust budget will have left."""

    def __init__(self, total: int, budget: TrustBudget, retries: int, rounds: int = 1, short_rounds: int = 1) -> None:
        self.total, self.budget, self.retries = total, budget, retries
        self.rounds, self.short_rounds = rounds, short_rounds
        self.seen = self.flagged = 0
        self.flagged_s = self.rounds_s = self.owed_s = 0.0
        self.best_cal: dict[int, float] = {}
        self.best_sync: dict[int, float] = {}

    def seed(self, best_cal: dict[int, float], best_sync: dict[int, float]) -> None:
        """The run's best calibration and sync probe by torch threads: the executor's own, which it
        lowers with every measurement, each row's included before the row is ``add``-ed."""
        self.best_cal, self.best_sync = best_cal, best_sync

    def owe(self, rows: list[dict]) -> None:
        """Rows measured before this process (a resume's): the rounds each ok one still owes."""
        for row in rows:
            if row.get("status") == "ok":
                owed = rounds_wanted(row, self.rounds, self.short_rounds) - rounds_done(row)
                self.owed_s += max(0, owed) * retime_s(row, probe=False)

    def add(self, row: dict) -> None:
        """A first measurement of one cell (any status)."""
        self.seen += 1
        if row.get("status") != "ok":
            return
        self.rounds_s += (rounds_wanted(row, self.rounds, self.short_rounds) - 1) * retime_s(row, probe=False)
        threads = number(row.get("torch_threads"))
        if worth_remeasuring(row_flags(row, self.best_cal.get(threads), self.best_sync.get(threads))):
            self.flagged += 1
            self.flagged_s += retime_s(row)

    def seconds(self) -> float:
        planned = self.rounds_s / self.seen * self.total if self.seen else 0.0
        return self.owed_s + planned + self._recheck_s()

    def _recheck_s(self) -> float:
        if not self.seen or not self.flagged or self.retries <= 0:
            return 0.0
        estimate = self.flagged / self.seen * self.total * (self.flagged_s / self.flagged)
        done = self.seen / max(self.total, 1)
        if math.isfinite(self.budget.allowed_s) and done > 0:  # the budget the whole first pass will grow
            estimate = min(estimate, max(0.0, self.budget.allowed_s / done - self.budget.spent_s))
        return estimate
