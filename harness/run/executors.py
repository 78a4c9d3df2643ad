"""Executors: measure one case and return its row fields, whatever happens (a failure is a row).

``InProcess`` measures in this process (variants and their compiled functions reused across cases,
``--timeout-s`` enforced by an alarm); ``Isolated`` sends each case to a fresh worker process
(``harness.run.protocol``), which a crash or an overrun kills without harming the sweep.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import time
from collections import Counter
from collections.abc import Callable

import torch

from harness.analysis.rounds import round_share, rounds_for
from harness.analysis.trust import (MIN_CALLS, SLOW_CALIBRATION, best_calibration, row_flags, sync_to_wait_for,
                                    worth_remeasuring)
from harness.bench.heap import pin_allocator
from harness.bench.machine import BANDWIDTH_KEY
from harness.bench.verify import ReferenceCache
from harness.bench.measure import fidelity_fields, measure
from harness.bench.quality import FidelityCache
from harness.core.case import Case
from harness.core.registry import get_variant
from harness.run.alarm import Alarm, CaseTimeout, case_limit_s
from harness.run.budget import TrustBudget
from harness.run.config import SweepConfig
from harness.run.failures import classify
from harness.run.footprint import memory_shortfall
from harness.run.protocol import WorkerDied, WorkerProcess
from harness.run.quiet import QuietWaiter
from harness.store.git import HARNESS_ROOT
from harness.store.provenance import cpu_model


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to the case's ``threads`` while it is measured (None: unchanged)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.cache
def node_fields(device: str) -> dict:
    """The ``node`` (hostname) and ``device_name`` columns of a row measured in this process (the Ray
    executor adds ``node_id``); for CUDA, the name of the GPU this process sees first."""
    name = torch.cuda.get_device_name() if device == "cuda" and torch.cuda.is_available() else cpu_model()
    return {"node": platform.node(), "device_name": name}


def note_calibration(best: dict[int, float], row: dict, threads: int | None = None,
                     column: str = "calibration_s") -> None:
    """Lower ``best`` (calibration seconds by torch threads) to a measured row's own calibration, timed
    on the row's ``torch_threads`` (``threads`` when it does not say); ``column`` "sync_s": its sync probe."""
    seed_calibration(best, {}, [{"torch_threads": threads, **row}], column)


def seed_calibration(best: dict[int, float], meta: dict, rows: list[dict], column: str = "calibration_s") -> None:
    """Lower ``best`` (calibration seconds by torch threads) to the run's best so far: run.json's
    entries (the one timed at the start) and its rows (a resume's); ``column`` "sync_s": the sync probe's."""
    counts = [c.get("threads") for c in meta.get("calibration") or [] if isinstance(c, dict)]
    counts += [r.get("torch_threads") for r in rows]
    for threads in {int(t) for t in counts if isinstance(t, (int, float)) and t == t}:
        found = best_calibration(meta, rows, threads, column)
        if found:
            best[threads] = min(best.get(threads, found), found)


class RunBests:
    """The run's best calibration and sync probe so far, by torch threads (``best_calibration``,
    ``best_sync``): what a measurement's evidence is judged against. Seeded from run.json and a
    resume's rows, lowered by each measurement."""

    def __init__(self) -> None:
        self.best_calibration: dict[int, float] = {}  # by torch threads: the kernel runs on all of them
        self.best_sync: dict[int, float] = {}  # the sync probe's, likewise

    def seed_calibration(self, meta: dict, rows: list[dict]) -> None:
        seed_calibration(self.best_calibration, meta, rows)
        seed_calibration(self.best_sync, meta, rows, "sync_s")

    def note_bests(self, row: dict, threads: int | None = None) -> None:
        """Lower both to a measured row's own (timed on ``threads`` when the row does not say)."""
        note_calibration(self.best_calibration, row, threads)
        note_calibration(self.best_sync, row, threads, "sync_s")

    def bests(self, threads: int) -> tuple[float | None, float | None]:
        return self.best_calibration.get(threads), self.best_sync.get(threads)


class InProcess(RunBests):
    """Measures cases in this process, reusing variant instances (and their compiled functions).

    A cell whose own evidence flags it (``harness.analysis.trust.row_flags``: noisy, few calls, host
    busy, slow calibration or threads' sync, above the ceiling; not page faults alone, which measuring
    again cannot clear) is measured again, up to ``retries`` times, each time after waiting (at most
    ``QUIET_WAIT_S``; ``QuietWaiter``) for the calibration kernel (and, after a slow sync, the sync
    probe) to come back near the best seen; the row keeps the attempt with the fewest flags (then the
    lowest IQR/median) and counts them.
    Re-measurements and their waits draw on the run's ``TrustBudget`` (harness.run.budget), which each
    cell's first attempt grows; once it is spent a flagged cell keeps its flags.
    """

    def __init__(self, config: SweepConfig, ceilings: dict[str, float], budget: TrustBudget | None = None) -> None:
        super().__init__()
        self.config, self.ceilings = config, ceilings
        self.budget = budget if budget is not None else TrustBudget(config.execution.trust_budget)
        pin_allocator(config.execution.allocator)  # also in workers and Ray tasks, before any case (run.json: the driver's)
        self.variants: dict = {}
        self.ref_cache = ReferenceCache(grads_first="fwd_bwd" in config.grid.passes)  # one reference per shape
        self.fidelity_cache = FidelityCache()
        self.waiter = QuietWaiter()
        self.cost: Counter = Counter()  # seconds per step of measuring, over the run (run.json "cost_s")

    def _measure_until_trusted(self, variant, case: Case, earlier: dict | None = None,
                               retries: int | None = None) -> dict:
        """Each attempt is bounded by ``--timeout-s`` on its own (waits for quiet are not counted): the
        first overrun is the case's timeout; a re-measurement that overruns keeps the earlier attempts.
        Re-measurements re-time the case (``measure``'s ``earlier``: the first attempt's memory and
        check are kept), as do all attempts when ``earlier`` (an ok row of the case) is given.
        ``retries``: re-measurements of a flagged attempt (None: ``--retries``)."""
        attempts = []
        for attempt in range((self.config.execution.retries if retries is None else retries) + 1):
            if attempt and not self.budget.allows():
                break
            again = attempts[0][2] if attempts else earlier
            steps = Counter()
            try:
                with self.budget.spend() if attempt else self.budget.first_measurement():
                    if attempt:
                        t0 = time.perf_counter()
                        self._wait_for_quiet(case.device, attempts[-1][2])
                        self.cost["waits for quiet"] += time.perf_counter() - t0
                    with Alarm(self.config.execution.timeout_s):
                        rec = measure(variant, case, self.config.execution.budget_s, self.ceilings.get(case.dtype),
                                      max_error_elements=self.config.grid.max_error_elements,
                                      ref_cache=self.ref_cache, bandwidth=self.ceilings.get(BANDWIDTH_KEY),
                                      min_samples=MIN_CALLS, earlier=again, cost=steps,
                                      slow_above=self._slow_above(), short=self._short_budget(case))
            except CaseTimeout:
                if not attempts:
                    raise
                break
            finally:
                if again is None:
                    self.cost.update(steps)
                else:  # timing it again: its own step
                    self.cost["re-measuring"] += sum(steps.values())
            threads = torch.get_num_threads()
            self.note_bests(rec, threads)
            flags = row_flags(rec, *self.bests(threads)) or []
            spread = rec["time_s_iqr"] / rec["time_s_median"] if rec["time_s_median"] else float("inf")
            attempts.append((len(flags), spread, rec))
            if rec["status"] != "ok" or not worth_remeasuring(flags):  # a wrong output is not timed again
                break
        best = min(attempts, key=lambda a: (a[0], a[1]))[2]
        if best["status"] == "ok" and case.pattern != "global":  # once per cell, shared by its configuration
            t0 = time.perf_counter()
            best = {**best, **fidelity_fields(case, self.fidelity_cache)}
            self.cost["fidelity"] += time.perf_counter() - t0
        return {**best, "attempts": len(attempts)}

    def _short_budget(self, case: Case) -> Callable[[float], float] | None:
        """``measure``'s ``short``: the budget of a multi-threaded CPU call that reads ``call_s``, its
        rounds' share of ``budget_s`` (harness.analysis.rounds: ``rounds_for``, ``round_share``); None
        where ``--short-rounds`` adds no rounds."""
        ex = self.config.execution
        if case.device != "cpu" or torch.get_num_threads() < 2 or ex.short_rounds <= ex.rounds:
            return None
        return lambda call_s: ex.budget_s * round_share(ex.rounds, rounds_for(call_s, ex.rounds, ex.short_rounds))

    def _slow_above(self) -> float | None:
        """The calibration time above which a sample counts as timed on a slow machine: ``SLOW_CALIBRATION``
        times the best seen on torch's current threads (None before any)."""
        best = self.best_calibration.get(torch.get_num_threads())
        return SLOW_CALIBRATION * best if best else None

    def _wait_for_quiet(self, device: str, last: dict) -> None:
        """Wait for the calibration kernel, and for the sync probe too when ``last`` (the attempt before)
        was a short call timed while the threads synchronized slowly."""
        best, sync = self.bests(torch.get_num_threads())
        self.waiter(device, best, limit_s=self.budget.left_s(), best_sync=sync_to_wait_for(last, sync))

    def variant(self, case: Case):
        key = (case.variant, case.params)
        if key not in self.variants:
            self.variants[key] = get_variant(case.variant, **dict(case.params))
        return self.variants[key]

    def metrics(self, case: Case, earlier: dict | None = None, retries: int | None = None) -> dict:
        """The case's row fields; ``earlier``: its ok row from before, whose memory and check a
        re-measurement keeps (only the time is measured again); ``retries``: re-measurements of a
        flagged attempt (None: ``--retries``; a planned round passes 0)."""
        return {**self._metrics(case, earlier, retries), **node_fields(case.device)}

    def _metrics(self, case: Case, earlier: dict | None = None, retries: int | None = None) -> dict:
        try:
            variant = self.variant(case)
            reasons = variant.not_supported_reasons(case)
            if reasons:
                return {"status": "unsupported", "reason": "; ".join(reasons)}
            too_big = memory_shortfall(case)
            if too_big:  # known before allocating anything: say so at once
                return {"status": "oom", "reason": too_big}
            with torch_threads(case.threads):
                return self._measure_until_trusted(variant, case, earlier, retries)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # every failure becomes a row; the sweep goes on
            status, reason = classify(exc)
            return {"status": status, "reason": reason}
        finally:
            if case.device == "cuda" and torch.cuda.is_available():
                torch.cuda.empty_cache()


class Isolated(RunBests):
    """Measures each case in a fresh worker process (harness.run.protocol), killed at the timeout; the
    run's bests are handed to each worker."""

    def __init__(self, config: SweepConfig, ceilings: dict[str, float], budget: TrustBudget | None = None) -> None:
        super().__init__()
        self.config, self.ceilings = config, ceilings
        self.budget = budget if budget is not None else TrustBudget(config.execution.trust_budget)

    def metrics(self, case: Case, earlier: dict | None = None, retries: int | None = None) -> dict:
        """The worker re-measures a flagged cell (``retries`` times at most; None: ``--retries``) within
        a budget of its own (its first attempt's time), judging its samples against the run's best
        calibration so far. ``earlier`` is not used: a fresh process checks its kernel again."""
        config = self.config if retries is None else self.config.with_execution(retries=retries)
        job = {"mode": "sweep", "config": config.to_dict(), "ceilings": self.ceilings,
               "best_calibration": self.best_calibration, "best_sync": self.best_sync}
        worker = None
        try:
            with self.budget.first_measurement():
                worker = WorkerProcess(HARNESS_ROOT, job)
                metrics = worker.ask({"case": case.to_record()}, case_limit_s(self.config.execution))
            self.note_bests(metrics)
            return {**node_fields(case.device), **metrics}
        except WorkerDied as died:
            return {"status": died.status, "reason": died.reason, **node_fields(case.device)}
        finally:
            if worker is not None:
                worker.close()
