"""Which variant to use: per case (every case field but the variant), the fastest variant whose time
can be trusted, against a baseline variant, in base units (seconds, bytes).

A cell can win only if it ran ``ok`` (a ``wrong`` cell, whose output is not what its pattern
defines, never wins) and its time is trusted (``time_trusted`` True, ``harness.analysis.trust_frame``).
Cells whose trust was not assessed (a run written before trust flags) can win only in a case where
no cell was assessed, and the answer says so. Pure functions of frames.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.analysis.trust_frame import trusted_value

# The case fields a tidy frame may hold besides the variant: one answer per distinct value of those present.
CASE_KEYS = ["run_id", "device", "dtype", "batch", "heads", "kv_heads", "head_dim", "pattern", "window", "segment",
             "sinks", "stride", "globals", "topk", "doc_lens", "causal", "pass", "threads", "q_len", "kv_len",
             "seq_len"]

# Quality-vs-cost columns carried with the winner where the frame has them (NaN where it does not).
QUALITY_COLUMNS = ("rel_error", "fidelity")

COLUMNS = ["variant", "case_id", "time_s_median", "time_s_iqr", "peak_mem_bytes", *QUALITY_COLUMNS, "trust",
           "candidates", "faster_untrusted", "left_out", "wrong", "baseline", "baseline_status", "baseline_trusted",
           "baseline_time_s_median", "baseline_peak_mem_bytes", "speedup", "memory_saving", "note"]


def _float(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0 else math.nan


def _left_out(g: pd.DataFrame, trust: list) -> dict[str, list[str]]:
    """The variants of one case that ran but may not win, by why: untrusted or wrong."""
    why: dict[str, list[str]] = {"untrusted": [], "wrong": []}
    for (variant, status), t in zip(zip(g["variant"], g["status"]), trust):
        if status == "wrong":
            why["wrong"].append(str(variant))
        elif status == "ok" and t is False:
            why["untrusted"].append(str(variant))
    return why


def _choose_one(g: pd.DataFrame, baseline: str) -> dict:
    """The answer for one case's cells (one per variant)."""
    status = g["status"].astype(str).to_list()
    trust = [trusted_value(t) if s == "ok" else None for t, s in
             zip(g["time_trusted"] if "time_trusted" in g.columns else [None] * len(g), status)]
    time_s = [_float(t) for t in g["time_s_median"]]
    ok = [s == "ok" and math.isfinite(t) and t > 0 for s, t in zip(status, time_s)]
    assessed = any(t is not None for t, o in zip(trust, ok) if o)
    eligible = [o and (t is True if assessed else t is None) for o, t in zip(ok, trust)]
    rec = {c: math.nan for c in COLUMNS}
    why = _left_out(g, trust)
    rec.update(variant=None, case_id=None, trust=None, candidates=sum(eligible), baseline=baseline or None,
               baseline_status="not run", baseline_trusted=None, faster_untrusted="", note="",
               left_out="; ".join(f"{reason}: {', '.join(names)}" for reason, names in why.items() if names),
               wrong=", ".join(why["wrong"]))
    rows = g.to_dict("records")
    base = next((r for r in rows if r["variant"] == baseline), None) if baseline else None
    if base is not None:
        k = rows.index(base)
        rec.update(baseline_status=status[k], baseline_trusted=trust[k] if ok[k] else None,
                   baseline_time_s_median=time_s[k] if ok[k] else math.nan,
                   baseline_peak_mem_bytes=_float(base.get("peak_mem_bytes")) if ok[k] else math.nan)
    if not any(eligible):
        ran = sum(ok)
        rec["note"] = ("no variant ran ok" if not ran else
                       f"no trusted variant: {ran} ran ok, none with a trusted time")
        return rec
    best = min((i for i, e in enumerate(eligible) if e), key=lambda i: (time_s[i], str(rows[i]["variant"])))
    win = rows[best]
    rec.update(variant=win["variant"], case_id=win.get("case_id"), time_s_median=time_s[best],
               time_s_iqr=_float(win.get("time_s_iqr")), peak_mem_bytes=_float(win.get("peak_mem_bytes")),
               trust=True if assessed else None)
    for col in QUALITY_COLUMNS:
        rec[col] = _float(win.get(col))
    rec["faster_untrusted"] = ", ".join(
        str(rows[i]["variant"]) for i in sorted(range(len(rows)), key=lambda i: time_s[i])
        if ok[i] and trust[i] is False and time_s[i] < time_s[best])
    rec["speedup"] = _ratio(rec["baseline_time_s_median"], rec["time_s_median"])
    rec["memory_saving"] = _ratio(rec["baseline_peak_mem_bytes"], rec["peak_mem_bytes"])
    notes = []
    if not assessed:
        notes.append("trust not assessed")
    if base is not None and ok[rows.index(base)] and rec["baseline_trusted"] is False:
        notes.append(f"{baseline}'s time is untrusted, so the speedup is too")
    elif base is not None and not ok[rows.index(base)]:
        notes.append(f"{baseline} {status[rows.index(base)]}")
    elif base is None and baseline:
        notes.append(f"{baseline} not run")
    rec["note"] = "; ".join(notes)
    return rec


def which_to_use(frame: pd.DataFrame, baseline: str | None, keys: list[str] | None = None) -> pd.DataFrame:
    """One row per case of ``frame`` (grouped by ``keys``, default: the ``CASE_KEYS`` it has): the
    fastest trusted ok variant (``variant``, None when there is none, and ``note`` says why), its
    ``time_s_median``, ``time_s_iqr``, ``peak_mem_bytes`` and quality columns (``rel_error``, and
    ``fidelity`` where the frame has it), ``trust`` (True, or None when the case was not assessed),
    ``candidates`` (cells that could win), ``faster_untrusted`` (variants measured faster whose time
    is untrusted), ``left_out`` (variants that ran but may not win, and why: "untrusted: a, b; wrong:
    c"), ``wrong`` (the wrong ones: "c"), and against ``baseline``: its status, trust, time and peak,
    ``speedup`` (its time / the winner's) and ``memory_saving`` (its peak / the winner's), NaN where
    either is missing. The baseline itself can win (speedup 1)."""
    keys = [k for k in (keys if keys is not None else CASE_KEYS) if k in frame.columns]
    if frame.empty or not keys:
        return pd.DataFrame(columns=[*keys, *COLUMNS])
    rows = []
    for key, g in frame.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), **_choose_one(g, baseline or "")})
    out = pd.DataFrame(rows, columns=[*keys, *COLUMNS])
    for col in ("time_s_median", "time_s_iqr", "peak_mem_bytes", *QUALITY_COLUMNS, "baseline_time_s_median",
                "baseline_peak_mem_bytes", "speedup", "memory_saving"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    out["candidates"] = out["candidates"].astype("int64")
    for col in ("trust", "baseline_trusted"):  # True, False or None, never a NumPy bool
        out[col] = pd.Series([None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else bool(v)
                              for v in out[col]], index=out.index, dtype=object)
    return out.reset_index(drop=True)


def wins(choice: pd.DataFrame) -> pd.Series:
    """How many cases each variant wins, most first (cases with no winner left out)."""
    won = choice["variant"].dropna()
    return won.value_counts().sort_index().sort_values(ascending=False, kind="stable") if len(won) \
        else pd.Series(dtype="int64")


def finite_positive(values) -> np.ndarray:
    """The finite positive numbers among ``values`` (ratios that exist), as float64."""
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype="float64")
    return v[np.isfinite(v) & (v > 0)]


def geometric_mean(values) -> float:
    """The geometric mean of the finite positive values, NaN when there is none."""
    v = finite_positive(values)
    return float(np.exp(np.log(v).mean())) if len(v) else math.nan
