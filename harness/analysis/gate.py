"""The pure parts of the `attnbench ci` regression gate: ``[accept-regression: ...]`` markers, the
A B B A block order of a process pair, the per-process values of both sides (``Measurements``) and
the verdict frame built from them (``judge``, with the columns of ``harness.analysis.compare``).
Measuring lives in ``harness.run.gate``; the command and its full description in ``harness.cli.ci``.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.analysis.compare import COLUMNS
from harness.analysis.stats import case_seed, median_ratio_ci, time_verdict

DEFAULT_PROCESSES = 5


DEFAULT_RECHECK_PROCESSES = 8


DEFAULT_THREADS = 1


ACCEPT_RE = re.compile(r"\[accept-regression:\s*([^\]]*)\]", re.IGNORECASE)


# ---- pure parts: acceptance markers, statistics, verdicts ---------------------------------------
def parse_accept_markers(messages: str) -> list[str]:
    """Case-id substrings accepted by ``[accept-regression: a, b]`` markers (``all`` accepts every case)."""
    patterns = []
    for match in ACCEPT_RE.finditer(messages or ""):
        patterns += [p.strip() for p in match.group(1).split(",") if p.strip()]
    return patterns


def accepted_by(case_id: str, patterns: list[str]) -> str | None:
    """The first marker pattern that accepts ``case_id``, or None."""
    for p in patterns:
        if p.lower() == "all" or p in case_id:
            return p
    return None


def block_order(pair_index: int) -> list[str]:
    """A B B A for even pairs, B A A B for odd ones: linear drift and who-goes-first both cancel."""
    return ["base", "new", "new", "base"] if pair_index % 2 == 0 else ["new", "base", "base", "new"]


@dataclass
class Measurements:
    """Per case id and side, one value per process that ran the case ok (processes come in pairs).

    ``raw_s``: the mean of the process's block medians for the case, in seconds. ``norm``: that divided
    by the process's calibration figure, the median of every calibration it timed (one just before its
    first block of each case). ``status`` keeps the last non-ok answer per (side, case id);
    ``calibration_s`` the calibration figure of every process per side.
    """

    norm: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {"base": {}, "new": {}})
    raw_s: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {"base": {}, "new": {}})
    status: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    calibration_s: dict[str, list[float]] = field(default_factory=lambda: {"base": [], "new": []})
    pairs: int = 0

    def add_process(self, side: str, blocks_by_case: dict[str, list[dict]]) -> None:
        """One process's answers: for each case id, its blocks (dicts from the worker)."""
        cals = [b["calibration_s"] for blocks in blocks_by_case.values() for b in blocks if b.get("calibration_s")]
        cal = statistics.median(cals) if cals else None
        if cal:
            self.calibration_s[side].append(cal)
        for case_id, blocks in blocks_by_case.items():
            bad = [b for b in blocks if b.get("status") != "ok"]
            if bad or not cal:
                last = bad[-1] if bad else {"status": "error", "reason": "no calibration measured"}
                self.status[(side, case_id)] = (last.get("status", "error"), last.get("reason", ""))
                continue
            raw = sum(b["median_s"] for b in blocks) / len(blocks)
            self.raw_s[side].setdefault(case_id, []).append(raw)
            self.norm[side].setdefault(case_id, []).append(raw / cal)


def judge(case_ids: list[str], m: Measurements, threshold: float, confidence: float,
          accept: list[str] | None = None) -> pd.DataFrame:
    """compare's frame (same columns, statistics and verdicts) from the per-process values of both sides."""
    rows = []
    for cid in case_ids:
        rec = {c: None for c in COLUMNS}
        b, n = m.norm["base"].get(cid), m.norm["new"].get(cid)
        b_state = "ok" if b else m.status.get(("base", cid), ("absent", ""))[0]
        n_state = "ok" if n else m.status.get(("new", cid), ("absent", ""))[0]
        rec.update(case_id=cid, reason="", base_status=b_state, new_status=n_state)
        if not b or not n:
            if "absent" in (b_state, n_state):
                rec["verdict"] = "new" if b_state == "absent" else "missing"
            else:
                rec["verdict"] = ("broken" if b else "fixed") if bool(b) != bool(n) else "not run"
                rec["reason"] = (m.status.get(("new", cid)) or m.status.get(("base", cid)) or ("", ""))[1]
            rows.append(rec)
            continue
        ci = median_ratio_ci(b, n, confidence, seed=case_seed(cid))
        raw = median_ratio_ci(m.raw_s["base"][cid], m.raw_s["new"][cid], confidence, seed=case_seed(cid))
        verdict = time_verdict(ci, threshold)
        marker = accepted_by(cid, accept or [])
        if verdict == "slower" and marker:
            verdict, rec["reason"] = "accepted", f"[accept-regression: {marker}]"
        rec.update(verdict=verdict, base_time_s_median=float(np.median(m.raw_s["base"][cid])),
                   new_time_s_median=float(np.median(m.raw_s["new"][cid])), base_n_samples=len(b),
                   new_n_samples=len(n), time_ratio_raw=raw.ratio, time_ratio_raw_lo=raw.lo,
                   time_ratio_raw_hi=raw.hi, time_ratio=ci.ratio, time_ratio_lo=ci.lo, time_ratio_hi=ci.hi)
        rows.append(rec)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    cal_b = float(np.median(m.calibration_s["base"])) if m.calibration_s["base"] else None
    cal_n = float(np.median(m.calibration_s["new"])) if m.calibration_s["new"] else None
    frame.attrs.update(threshold=threshold, confidence=confidence, base_calibration_s=cal_b, new_calibration_s=cal_n,
                       calibration_ratio=cal_n / cal_b if cal_b and cal_n else None)
    return frame
