"""The report's first line per run: one verdict on how far its timings can be trusted, with the run's
evidence under it (rounds that agree, samples left out, the re-check's wait, the calibration
kernel's drift between the run's start and end), never a second verdict beside it.

``trust_verdict`` reads a prepared frame (``harness.render.prepare.prepare``) and each run's
run.json; ``drift_clause`` is also what ``attnbench show`` prints. Pure functions.
"""

from __future__ import annotations

import pandas as pd

from harness.analysis.trust import SLOW_CALIBRATION, SLOW_MACHINE, SLOW_SYNC
from harness.analysis.trust_frame import trust_summary
from harness.render.trust_text import evidence_clauses

DRIFT = 1.2  # slowest / fastest run-level calibration above which the drift is worth a clause


def calibration_drift(meta: dict) -> float | None:
    """Slowest over fastest run-level calibration time of a run (its start and end), or None with fewer
    than two."""
    cal = [c.get("time_s_median") for c in (meta.get("calibration") or []) if isinstance(c, dict)]
    cal = [c for c in cal if isinstance(c, (int, float)) and c > 0]
    return max(cal) / min(cal) if len(cal) >= 2 else None


def _changed(drift: float) -> str:
    return f"the calibration kernel's time changed by {drift - 1:.0%}"


def drift_clause(meta: dict, slow_cells: int | None = None) -> str:
    """The calibration drift as evidence ('' when under ``DRIFT``): how much the machine's speed
    changed during the run, and what the per-cell check made of it (``slow_cells``: cells flagged
    slow machine, when known)."""
    drift = calibration_drift(meta)
    if drift is None or drift <= DRIFT:
        return ""
    sync = (f" (or, for a short multi-threaded CPU call, whose threads synchronized more than {SLOW_SYNC - 1:.0%} "
            "slower)" if (meta.get("sweep") or {}).get("device", "cpu") == "cpu" else "")
    checked = (f"every cell was timed beside its own calibration, and those more than {SLOW_CALIBRATION - 1:.0%} "
               f"slower than the run's best{sync} are flagged " + SLOW_MACHINE)
    if slow_cells is not None:
        checked += f" ({slow_cells} cell{'' if slow_cells == 1 else 's'})"
    return f"{_changed(drift)} between the run's start and end (the machine was busy or throttling at times); {checked}"


def _reason_count(reasons: list[tuple[str, int]], name: str) -> int:
    return next((n for r, n in reasons if r == name), 0)


def trust_verdict(runs: list[tuple], prep: pd.DataFrame) -> list[dict]:
    """One line per run, {"text", "level", "lead", "evidence", "tail", "summary"}: how many of its
    measured (ok) cells are trusted, how many are flagged and for what (each flag counted by the text
    before its first ":"), the run's evidence (``evidence_clauses`` and ``drift_clause``), or that trust
    was not assessed. Level: ok (nothing flagged, no drift), warn (something flagged, or the calibration
    drifted) or na (nothing measured or not assessed). ``text`` is the whole line; ``lead`` the counts,
    ``tail`` what flagged cells are left out of, ``evidence`` the clauses and ``summary`` a short title
    for them (naming the drift, which alone makes a verdict warn), for a page that shows the verdict
    first and the evidence folded under it (lines at level na have ``text`` only)."""
    lines, start = [], 0
    for df, m, p in runs:
        run_id = str(m.get("run_id") or p.name)
        t = trust_summary(prep.iloc[start:start + len(df)])  # prep keeps the runs' rows in order
        start += len(df)
        head = f"Trust, run {run_id}: " if len(runs) > 1 else "Trust: "
        if not t["measured"]:
            lines.append({"text": head + "no measured cells (no cell ran ok)", "level": "na"})
            continue
        if t["not_assessed"] == t["measured"]:
            drift = drift_clause(m)
            lines.append({"text": head + "not assessed (run written before trust flags); every measured cell is "
                          "drawn and fitted as measured" + (f"; {drift}" if drift else ""), "level": "na"})
            continue
        text = f"{t['trusted']} of {t['measured']} measured cells trusted"
        if t["untrusted"]:
            text += f"; {t['untrusted']} flagged ({', '.join(f'{r} {n}' for r, n in t['reasons'])})"
        if t["not_assessed"]:
            text += f"; {t['not_assessed']} not assessed"
        drift = drift_clause(m, _reason_count(t["reasons"], SLOW_MACHINE))
        evidence = [*evidence_clauses(m.get("trust") or {}), *([drift] if drift else [])]
        tail = (" \u2014 flagged cells never win 'Which to use', are drawn hollow and are left out of the time "
                "exponent fits and crossovers; see Flagged cells") if t["untrusted"] else ""
        summary = f"the evidence behind it ({len(evidence)} finding{'' if len(evidence) == 1 else 's'}"
        summary += f"; {_changed(calibration_drift(m))} during the run)" if drift else ")"
        lines.append({"text": head + text + "".join(f"; {c}" for c in evidence) + tail, "lead": head + text,
                      "evidence": evidence, "tail": tail, "summary": summary,
                      "level": "warn" if t["untrusted"] or drift else "ok"})
    return lines
