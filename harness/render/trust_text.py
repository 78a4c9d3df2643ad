"""A run's trust summary (run.json's ``trust``, ``harness.analysis.trust.summary`` and the sweep's
re-check) in English: the clauses the report's trust verdict (folded under it) and `attnbench show`
(after it) give beside the count of trusted cells."""

from __future__ import annotations

from harness.analysis.trust import ROUNDS_AGREE, SHORT_BELOW_S, SLOW_CALIBRATION, SLOW_SYNC, number


def rounds_text(trust: dict) -> str:
    """One clause on how well a run measured in rounds agrees with itself ('' without rounds)."""
    r = trust.get("rounds")
    if not r:
        return ""
    return (f"{r['agree']} of {r['cells']} cells measured more than once (rounds, re-checks) had their kept round "
            f"reproduced within {ROUNDS_AGREE - 1:.0%} (median slowest/fastest round {r['spread_median']:.2f}x)")


def contention_text(trust: dict) -> str:
    """One clause on the samples that waited for a CPU ('' when none did or none was marked)."""
    c = trust.get("contention")
    if not c:
        return ""
    return (f"{c['contended']} of {c['samples']} timing samples (in {c['cells']} cells) waited for a CPU another "
            f"process held and were left out of their cell's statistics"
            + (f" ({c['all_contended']} cells had no other sample)" if c.get("all_contended") else ""))


def slow_text(trust: dict) -> str:
    """One clause on the samples timed while the machine was slow ('' when none was)."""
    s = trust.get("slow")
    if not s or not s.get("slow"):
        return ""
    kept = s["slow"] - s["left_out"]
    return (f"{s['slow']} of {s['samples']} timing samples (in {s['cells']} cells) were timed while the machine "
            f"was slow (the calibration beside them above {SLOW_CALIBRATION:g}x the run's best so far) and left out "
            "of their cell's statistics" + (f", but for {kept} kept in cells with too few fast ones" if kept else ""))


def sync_text(trust: dict) -> str:
    """One clause on how many cells met the host state that slows short multi-threaded CPU calls (their
    threads' sync probe slow; '' when none did or the run has no probe)."""
    s = trust.get("sync")
    if not s or not s.get("slow"):
        return ""
    return (f"beside {s['slow']} of {s['cells']} cells the threads synchronized more than {SLOW_SYNC:g}x slower than "
            f"the run's best, a state that slows short multi-threaded calls while the calibration does not show it "
            f"({s['flagged']} of them under {SHORT_BELOW_S * 1e3:g} ms, flagged slow machine)")


def wait_text(trust: dict) -> str:
    """One clause on how long the end-of-run re-check waited for a slow machine to come back ('' when
    it waited less than a second or did not run)."""
    w = trust.get("recheck_wait")
    waited, budget = (number(w.get("waited_s")), number(w.get("budget_s"))) if isinstance(w, dict) else (None, None)
    if not waited or waited < 1:
        return ""
    of_budget = f" (of up to {budget:.0f} s, --recheck-wait-s)" if budget else ""
    return f"the end-of-run re-check waited {waited:.0f} s{of_budget} for the machine to come back near its best speed"


def evidence_clauses(trust: dict) -> list[str]:
    """The run-level clauses beside the trusted count: rounds that agree, samples left out, the threads'
    sync, the wait."""
    return [text for text in (rounds_text(trust), contention_text(trust), slow_text(trust), sync_text(trust),
                              wait_text(trust)) if text]
