"""Measuring cells again once every cell has a row: further rounds, the cells a cross-cell check
suspects, and the end-of-run re-check of cells their own evidence still flags. Each new measurement
is journaled as a row that supersedes the cell's old one, so Ctrl-C keeps what was re-measured.
The cross-cell re-measurements and the re-check (its waits included) draw on the run's trust budget
(``cells.budget``, harness.run.budget); the planned rounds (``--rounds``, ``--short-rounds``) do not."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.analysis.rounds import keep_faster, merge_round, rounds_done, rounds_wanted
from harness.analysis.trust import (RECHECK, ROUND_PREFIX, SLOW_MACHINE, best_calibration, cross_suspects,
                                    flag_name, row_flags, sync_to_wait_for, worth_remeasuring)
from harness.core.case import Case
from harness.run.executors import torch_threads
from harness.run.figures import against
from harness.run.budget import TrustBudget
from harness.run.progress import Progress, say
from harness.run.quiet import QuietWaiter


@dataclass
class Cells:
    """The run's rows as they stand, by position, and how to measure one of them again."""

    rows: list[dict]
    by_id: dict[str, Case]
    runner: object  # an executor: .metrics(case, earlier_row) -> row fields
    record: Callable[[Case, dict, float], None]  # journals a row and appends it to ``rows``
    meta: dict
    quiet: bool
    budget: TrustBudget = field(default_factory=TrustBudget.unlimited)  # the run's (harness.run.budget)

    def best_cal(self, row: dict, column: str = "calibration_s") -> float | None:
        """The run's best calibration so far, among those timed on ``row``'s torch threads (``column``
        "sync_s": the best sync probe)."""
        threads = row.get("torch_threads")
        return best_calibration(self.meta, self.rows, int(threads) if isinstance(threads, (int, float)) else None,
                                column)

    def bests(self, row: dict) -> tuple[float | None, float | None]:
        """The run's best calibration and sync probe so far, on ``row``'s torch threads."""
        return self.best_cal(row), self.best_cal(row, "sync_s")

    def case(self, i: int) -> Case:
        return self.by_id[self.rows[i]["case_id"]]

    def supersede(self, i: int, metrics: dict, t0: float) -> None:
        """Journal a new measurement of ``rows[i]``'s cell (timed from ``t0``); the new row, appended by
        ``record``, takes the old one's place."""
        self.record(self.case(i), metrics, time.perf_counter() - t0)
        self.rows[i] = self.rows.pop()


def more_rounds(cells: Cells, rounds: int, short_rounds: int = 1) -> None:
    """Rounds 2..: every ok cell measured again, one round after another, until it has ``rounds`` of
    them, or ``short_rounds`` when that is more and its calls are short (``rounds_wanted``);
    the fastest round kept, or a clean one that agrees with it (harness.analysis.rounds). Each new row
    (``remeasured_for`` "round k") supersedes the cell's row, so a resume measures only the cells still
    short of their rounds. These rounds are the run's plan, not re-measurements: each is one
    measurement (no ``--retries``), drawing nothing from the trust budget, which stays for the end-of-run
    re-check of the cells still flagged, after a slow spell has had time to pass."""
    rows = cells.rows
    for k in itertools.count(2):
        wanted = [i for i, r in enumerate(rows) if r.get("status") == "ok" and rounds_wanted(r, rounds, short_rounds) >= k]
        if not wanted:
            return
        due = [i for i in wanted if rounds_done(rows[i]) < k]
        if not due:
            continue
        what = "" if rounds >= k else " (short multi-threaded CPU calls: --short-rounds)"
        say(cells.quiet, f"round {k}: measuring {len(due)} cell(s) again{what}")
        progress = Progress(len(due), 0, cells.quiet)
        for i in due:
            progress.show(cells.case(i))
            t0 = time.perf_counter()
            fresh = cells.runner.metrics(cells.case(i), rows[i], retries=0)  # flagged: the re-check clears it
            metrics = merge_round(rows[i], fresh, *cells.bests(rows[i]))
            cells.supersede(i, {**metrics, "remeasured_for": f"{ROUND_PREFIX}{k}"}, t0)
            progress.advance()
        progress.close()


def remeasure_suspects(cells: Cells) -> None:
    """Cross-cell checks once every cell exists: each cell suspected of a slow measurement (a fwd
    slower than its own fwd_bwd; a time that drops more than 2x at the next length) is measured
    again. The new row (``remeasured_for``: the check) keeps the faster of the two measurements (load
    only ever adds time), or, for a cell measured in rounds, counts the new one as one more round;
    ``assess`` then flags what is still suspect."""
    rows = cells.rows
    suspects = cross_suspects(rows)
    if suspects:
        say(cells.quiet, f"re-measuring {len(suspects)} cell(s) a cross-cell check suspects")
    budget = cells.budget
    for i, reason in sorted(suspects.items()):
        if not budget.allows():
            say(cells.quiet, "the run's trust budget is spent: the other suspected cells keep their flags")
            return
        old = rows[i]
        t0 = time.perf_counter()
        with budget.spend():
            metrics = cells.runner.metrics(cells.case(i), old)
        attempts = int(old.get("attempts") or 1) + int(metrics.get("attempts") or 1)
        metrics = (merge_round(old, metrics, *cells.bests(old)) if rounds_done(old) > 1
                   else keep_faster(old, metrics))
        cells.supersede(i, {**metrics, "attempts": attempts, "remeasured_for": reason}, t0)


def recheck_flagged(cells: Cells, retries: int, wait_s: float = 0.0) -> None:
    """Flag, re-measure, then flag what is still suspect, once more at the end: a cell its own evidence
    still flags (noisy, host busy, slow calibration, above the best ceiling, an unreproduced round, ...)
    is measured again, after waiting for the calibration kernel (and, for a short call whose threads
    synchronized slowly, the sync probe) to come back near the run's best, as
    one more round (``merge_round``; ``remeasured_for`` "round k (recheck: ...)"), up to ``retries``
    times (``--recheck-retries``) while it stays flagged. Each pass judges every cell afresh: a
    re-check can lower the run's best calibration, so a cell it leaves "slow machine" by a hair is
    re-checked in the next pass too. Rows re-checked before a resume are not again.

    The waits may take ``wait_s`` in all (``--recheck-wait-s``) until the machine comes back; once that
    is spent, a cell whose only flag is "slow machine" is skipped when its single probe finds the
    machine still slow: measuring it again could not clear the flag. ``meta["recheck_wait"]`` records
    the budget and the time waited."""
    rows, ceilings = cells.rows, cells.meta["ceilings_flops_per_s"]

    def flagged(i: int) -> list[str]:
        flags = row_flags(against(rows[i], ceilings), *cells.bests(rows[i])) or []
        return sorted({flag_name(f) for f in flags})

    candidates = [i for i, r in enumerate(rows)
                  if r.get("status") == "ok" and RECHECK not in str(r.get("remeasured_for") or "")]
    wait = QuietWaiter(wait_s, log=lambda msg: say(cells.quiet, msg))
    budget = cells.budget
    rechecks = dict.fromkeys(candidates, 0)
    try:
        for attempt in itertools.count(1):  # a pass per round of re-checks
            due = [(i, names) for i in candidates
                   if rechecks[i] < retries and worth_remeasuring(names := flagged(i))]
            if not due:
                return
            say(cells.quiet, f"re-checking {len(due)} cell(s) their own evidence still flags (pass {attempt}; "
                             f"a cell at most {retries} time(s))")
            progress, skipped = Progress(len(due), 0, cells.quiet, bound_s=budget.left_s), 0
            for i, names in due:
                if not budget.allows():
                    say(cells.quiet, "the run's trust budget is spent: the cells still flagged keep their flags")
                    return
                rechecks[i] += 1
                old, case = rows[i], cells.case(i)
                progress.show(case)
                (best, sync), slow_only = cells.bests(old), wait.missed and names == [SLOW_MACHINE]
                t0 = time.perf_counter()
                with budget.spend():
                    with torch_threads(case.threads):  # once a wait ran out, one probe
                        quiet_now = wait(case.device, best, limit_s=budget.left_s(),
                                         best_sync=sync_to_wait_for(old, sync))
                    if slow_only and not quiet_now:  # the machine stays slow: measuring again could not clear it
                        skipped += 1
                        progress.advance()
                        continue
                    fresh = cells.runner.metrics(case, old)
                metrics = merge_round(old, fresh, best, sync)
                label = f"{ROUND_PREFIX}{rounds_done(old) + 1} {RECHECK}{', '.join(names)})"
                cells.supersede(i, {**metrics, "remeasured_for": label}, t0)
                progress.advance()
            progress.close()
            if skipped:
                say(cells.quiet, f"{skipped} cell(s) flagged only '{SLOW_MACHINE}' not re-checked: the machine "
                                 "stayed slow (a wait for quiet ran out), so measuring again could not clear them")
    finally:  # Ctrl-C too: the time waited is part of the run's story
        if wait.waited_s:
            cells.meta["recheck_wait"] = {"budget_s": round(wait_s, 1), "waited_s": round(wait.waited_s, 1)}
