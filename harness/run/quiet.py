"""Waiting for a slow machine to come back: the calibration kernel (and, for a short multi-threaded
CPU call, the sync probe) probed until it runs near the run's best time, and the end-of-run re-check's
budget for such waits."""

from __future__ import annotations

import time

from harness.analysis.trust import SLOW_CALIBRATION, SLOW_SYNC
from harness.bench.host import sync_probe
from harness.bench.measure import CALIBRATION_BUDGET_S
from harness.bench.timing import calibrate

QUIET_WAIT_S = 5.0  # longest wait for the machine to calm down before re-measuring a flagged cell
QUIET_POLL_S = 0.5
RECHECK_WAIT_FRACTION = 0.15  # by default the end-of-run re-check may wait this fraction of the cases' time ...
RECHECK_WAIT_MAX_S = 300.0  # ... at most this long (and at least QUIET_WAIT_S)


def wait_for_quiet(device: str, best: float | None, limit_s: float = QUIET_WAIT_S,
                   best_sync: float | None = None) -> bool:
    """Wait, at most ``limit_s``, for the calibration kernel (on torch's current threads) to run within
    ``SLOW_CALIBRATION`` of ``best``, the best time seen, and, given ``best_sync`` (the run's best sync
    probe, for a short multi-threaded CPU call), the sync probe within ``SLOW_SYNC`` of it; True when
    they did (False without a best)."""
    if not best:
        return False
    deadline = time.perf_counter() + limit_s
    while True:  # at least one probe
        try:
            now = calibrate(device, CALIBRATION_BUDGET_S, min_samples=5)["time_s_median"]
        except Exception:  # e.g. a CUDA context an earlier case broke: no evidence of quiet, and no crash
            return False
        if now <= SLOW_CALIBRATION * best and (not best_sync or sync_probe() <= SLOW_SYNC * best_sync):
            return True
        if time.perf_counter() + QUIET_POLL_S >= deadline:
            return False
        time.sleep(QUIET_POLL_S)


class QuietWaiter:
    """``wait_for_quiet`` for a run of re-measurements. After a wait that ran out (the machine stayed
    slow for ``QUIET_WAIT_S``: a sustained slowdown, not a burst) the next waits only probe once, until a
    probe finds the machine quiet again: on a machine that stays slow, each re-measurement costs one
    calibration, not ``QUIET_WAIT_S`` (its rows are flagged all the same). With ``--isolate`` each case's
    worker starts with a fresh one, so there only the sweep's end-of-run waits share it.

    ``budget_s`` (the end-of-run re-check's ``--recheck-wait-s``; 0: none) is how long these waits may
    take in all before they only probe (a wait that would start past it is one probe, the machine
    quiet or not when it last looked). While some is left, a wait that runs out goes on until the
    machine comes back or the budget is spent: on a VM whose speed changes for a minute or two at a
    time, the re-check then measures its cells once the machine is back, instead of giving up after
    ``QUIET_WAIT_S``. ``waited_s``: the time spent waiting, every wait counted. ``log`` (a callable,
    or None) is told when a wait goes on past ``QUIET_WAIT_S`` and how it ended."""

    def __init__(self, budget_s: float = 0.0, log=None) -> None:
        self.missed = False
        self.budget_s = budget_s
        self.waited_s = 0.0
        self.log = log

    def __call__(self, device: str, best: float | None, limit_s: float | None = None,
                 best_sync: float | None = None) -> bool:
        """Wait for quiet (``wait_for_quiet``); ``limit_s`` (the run's trust budget left) bounds this
        wait, at least one probe."""
        t0 = time.perf_counter()
        first = QUIET_POLL_S if self.missed else QUIET_WAIT_S
        if self.budget_s > 0:  # a budgeted waiter never waits past its budget: once it is spent, single probes
            first = min(first, max(0.0, self.budget_s - self.waited_s))
        quiet = wait_for_quiet(device, best, first if limit_s is None else max(0.0, min(first, limit_s)), best_sync)
        left = self.budget_s - self.waited_s - (time.perf_counter() - t0)
        if limit_s is not None:
            left = min(left, limit_s - (time.perf_counter() - t0))
        if best and not quiet and left > QUIET_POLL_S:  # a slowdown that outlasts a burst: wait it out, bounded
            if self.log:
                what = f" or the threads' sync above {SLOW_SYNC:.2f}x its best" if best_sync else ""
                self.log(f"the machine is slow (calibration above {SLOW_CALIBRATION:.2f}x the run's best, "
                         f"{best * 1e3:.3g} ms{what}): waiting up to {left:.0f} s more for it to come back "
                         f"(--recheck-wait-s {self.budget_s:.0f})")
            t1 = time.perf_counter()
            quiet = wait_for_quiet(device, best, left, best_sync)
            if self.log:
                self.log(f"the machine came back after {time.perf_counter() - t1:.0f} s" if quiet else
                         f"the machine stayed slow for {time.perf_counter() - t1:.0f} s: the re-check's wait is spent")
        self.waited_s += time.perf_counter() - t0
        if best:
            self.missed = not quiet
        return quiet


def recheck_wait_budget_s(execution, took_s: float) -> float:
    """How long the end-of-run re-check may wait for quiet in all: ``--recheck-wait-s``, or by default
    ``RECHECK_WAIT_FRACTION`` of ``took_s`` (the time the run's cases took), at least ``QUIET_WAIT_S`` and
    at most ``RECHECK_WAIT_MAX_S``: a run waits in proportion to how long it measured."""
    if execution.recheck_wait_s is not None:
        return execution.recheck_wait_s
    return min(RECHECK_WAIT_MAX_S, max(QUIET_WAIT_S, RECHECK_WAIT_FRACTION * took_s))
