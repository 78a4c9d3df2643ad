"""The regression gate's statistics and verdicts, pure functions of what the workers answered:
``[accept-regression: ...]`` markers, the A B B A block order of a process pair, the per-pair values
of both sides (``Measurements``), the verdict frame built from them (``judge``, with the columns of
``harness.analysis.compare``: time on per-pair log ratios, peak memory and error without statistics)
and the recheck on fresh pairs (``merge_recheck``).
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.analysis.compare import (COLUMNS, error_verdict, fidelity_verdict, mem_verdict, output_problem,
                                     status_verdict)
from harness.analysis.stats import case_seed, paired_ratio_ci, time_verdict

ACCEPT_RE = re.compile(r"\[accept-regression:\s*([^\]]*)\]", re.IGNORECASE)


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
    """What the process pairs measured, kept by pair: the gate's statistics are on per-pair ratios.

    Per process and case: ``raw`` the mean of its block medians (seconds) and ``norm`` that divided by
    the process's calibration figure (the median of every calibration it timed, one just before its
    first block of each case). ``pairs_norm`` / ``pairs_raw``: per case id, one (base, new) tuple per
    pair in which both processes ran the case ok. ``peak_mem_bytes``, ``rel_error`` and ``fidelity`` (an
    approximate pattern's output error against global attention): per side and
    case id, one figure per process (measured once, beside its first block). ``ok``: the case ids each
    side ran ok at least once; ``status`` the last non-ok answer per (side, case id); ``calibration_s``
    every process's calibration figure per side.
    """

    pairs_norm: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    pairs_raw: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    peak_mem_bytes: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {"base": {}, "new": {}})
    rel_error: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {"base": {}, "new": {}})
    fidelity: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {"base": {}, "new": {}})
    ok: dict[str, set] = field(default_factory=lambda: {"base": set(), "new": set()})
    status: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    calibration_s: dict[str, list[float]] = field(default_factory=lambda: {"base": [], "new": []})
    pairs: int = 0

    def _process(self, side: str, blocks_by_case: dict[str, list[dict]]) -> dict[str, tuple[float, float]]:
        """One process's answers (for each case id, its blocks): case id -> (raw, norm) of the ok ones."""
        cals = [b["calibration_s"] for blocks in blocks_by_case.values() for b in blocks if b.get("calibration_s")]
        cal = statistics.median(cals) if cals else None
        if cal:
            self.calibration_s[side].append(cal)
        values = {}
        for case_id, blocks in blocks_by_case.items():
            for key, store in (("peak_mem_bytes", self.peak_mem_bytes), ("rel_error", self.rel_error),
                               ("fidelity_out_rel_error", self.fidelity)):
                got = [b[key] for b in blocks if b.get(key) is not None]
                if got:
                    store[side].setdefault(case_id, []).append(float(got[0]))
            bad = [b for b in blocks if b.get("status") != "ok"]
            if bad or not cal:
                last = bad[-1] if bad else {"status": "error", "reason": "no calibration measured"}
                self.status[(side, case_id)] = (last.get("status", "error"), last.get("reason", ""))
                continue
            raw = sum(b["median_s"] for b in blocks) / len(blocks)
            self.ok[side].add(case_id)
            values[case_id] = (raw, raw / cal)
        return values

    def add_pair(self, blocks: dict[str, dict[str, list[dict]]]) -> None:
        """One pair of processes: ``blocks[side][case_id]`` is the list of that process's answers."""
        got = {side: self._process(side, blocks[side]) for side in ("base", "new")}
        for case_id in got["base"].keys() & got["new"].keys():
            (b_raw, b_norm), (n_raw, n_norm) = got["base"][case_id], got["new"][case_id]
            self.pairs_norm.setdefault(case_id, []).append((b_norm, n_norm))
            self.pairs_raw.setdefault(case_id, []).append((b_raw, n_raw))
        self.pairs += 1


def _median(values) -> float | None:
    return float(np.median(values)) if values else None


def judge(case_ids: list[str], m: Measurements, threshold: float, confidence: float,
          accept: list[str] | None = None, dtypes: dict[str, str] | None = None) -> pd.DataFrame:
    """compare's frame (same columns and verdicts) from the pairs: time by the per-pair log ratios of
    calibration-normalized values (``paired_ratio_ci``), peak memory by ``mem_verdict`` on the median
    over processes, error by ``error_verdict`` on the largest error a process measured. A case ok in
    BASE is ``wrong`` when NEW answered status ``wrong`` or its error fails ``output_problem``
    (non-finite, missing where BASE's was measured, above the dtype's tolerance), whatever its time."""
    rows = []
    for cid in case_ids:
        rec = {c: None for c in COLUMNS}
        b_ok, n_ok = cid in m.ok["base"], cid in m.ok["new"]
        b_state = "ok" if b_ok else m.status.get(("base", cid), ("absent", ""))[0]
        n_state = "ok" if n_ok else m.status.get(("new", cid), ("absent", ""))[0]
        rec.update(case_id=cid, reason="", base_status=b_state, new_status=n_state)
        mem_b, mem_n = _median(m.peak_mem_bytes["base"].get(cid)), _median(m.peak_mem_bytes["new"].get(cid))
        err_b = max(m.rel_error["base"].get(cid) or [math.nan])
        err_n = max(m.rel_error["new"].get(cid) or [math.nan])
        err_b, err_n = (None if math.isnan(e) else e for e in (err_b, err_n))
        rec.update(base_peak_mem_bytes=mem_b, new_peak_mem_bytes=mem_n, base_rel_error=err_b, new_rel_error=err_n,
                   mem_ratio=mem_n / mem_b if mem_b and mem_n else None, mem_verdict=mem_verdict(mem_b, mem_n),
                   error_verdict=error_verdict(err_b, err_n, (dtypes or {}).get(cid, "float32")))
        fid_b, fid_n = (max(m.fidelity[side][cid]) if m.fidelity[side].get(cid) else None for side in ("base", "new"))
        if fid_b is not None:  # an approximate pattern measured by both trees: judged like the error
            rec.update(base_fidelity=fid_b, new_fidelity=fid_n, fidelity_verdict=fidelity_verdict(fid_b, fid_n))
        marker = accepted_by(cid, accept or [])
        if rec["mem_verdict"] == "more" and marker:
            rec["mem_verdict"] = "more (accepted)"
        pairs = m.pairs_norm.get(cid)
        if not pairs:
            if "absent" in (b_state, n_state):
                rec["verdict"] = "new" if b_state == "absent" else "missing"
            elif b_ok and n_ok:  # each side ok somewhere, never both in one pair: nothing paired to judge
                rec["verdict"], rec["reason"] = "not run", "no pair of processes ran the case ok on both sides"
            else:
                rec["verdict"] = status_verdict(b_state, n_state)
                rec["reason"] = (m.status.get(("new", cid)) or m.status.get(("base", cid)) or ("", ""))[1]
            rows.append(rec)
            continue
        ci = paired_ratio_ci(*zip(*pairs), confidence, seed=case_seed(cid))
        raw_pairs = m.pairs_raw[cid]
        raw = paired_ratio_ci(*zip(*raw_pairs), confidence, seed=case_seed(cid))
        verdict = time_verdict(ci, threshold)
        if verdict == "slower" and marker:
            verdict, rec["reason"] = "accepted", f"[accept-regression: {marker}]"
        rec.update(verdict=verdict, base_time_s_median=float(np.median([p[0] for p in raw_pairs])),
                   new_time_s_median=float(np.median([p[1] for p in raw_pairs])), base_n_samples=len(pairs),
                   new_n_samples=len(pairs), time_ratio_raw=raw.ratio, time_ratio_raw_lo=raw.lo,
                   time_ratio_raw_hi=raw.hi, time_ratio=ci.ratio, time_ratio_lo=ci.lo, time_ratio_hi=ci.hi)
        problem = output_problem(err_b, err_n, (dtypes or {}).get(cid, "float32"))
        seen = m.status.get(("new", cid), ("", ""))
        if seen[0] == "wrong":  # wrong in one NEW process, ok in others: a flake shows
            problem = f"wrong in a NEW process: {seen[1]}"
        if problem:  # whatever the time; no marker accepts it
            rec.update(verdict="wrong", reason=problem)
        rows.append(rec)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    cal_b = float(np.median(m.calibration_s["base"])) if m.calibration_s["base"] else None
    cal_n = float(np.median(m.calibration_s["new"])) if m.calibration_s["new"] else None
    frame.attrs.update(threshold=threshold, confidence=confidence, base_calibration_s=cal_b, new_calibration_s=cal_n,
                       calibration_ratio=cal_n / cal_b if cal_b and cal_n else None, pairs=m.pairs)
    return frame


def merge_recheck(first: pd.DataFrame, recheck: pd.DataFrame) -> pd.DataFrame:
    """The first round's frame with each re-measured case's row replaced by its recheck row: a flagged
    case is judged on the fresh pairs only, never pooled with the pairs that raised the flag. The
    reason of a replaced row keeps the first round's ratio and interval."""
    if recheck.empty:
        return first
    out = first.set_index("case_id")
    again = recheck.set_index("case_id")
    for cid, row in again.iterrows():
        before = out.loc[cid]
        note = (f"first round {before['time_ratio']:.2f}x [{before['time_ratio_lo']:.2f}, {before['time_ratio_hi']:.2f}] "
                f"on {before['base_n_samples']} pairs; judged on {row['base_n_samples']} fresh pairs")
        row = row.copy()
        row["reason"] = f"{row['reason']}; {note}" if row["reason"] else note
        out.loc[cid] = row
    frame = out.reset_index()[first.columns]
    frame.attrs.update(first.attrs)
    frame.attrs["recheck_pairs"] = recheck.attrs.get("pairs")
    return frame
