"""Derived tables of a report: a tidy results DataFrame in, a smaller DataFrame out.

``prepare`` adds the display columns every table and figure reads (series and shape labels, metrics
in report units picked by ``harness.render.units``, NaN unless the cell ran ok); the other functions
derive scaling exponents, crossovers, speedups over a baseline, worst errors, ceiling fractions and
status counts from it. Pure: no printing, no files, no figures.

Trust (issue 9): ``prepare`` carries each row's ``time_trusted`` (True, False, or None for "not
assessed": rows written before trust flags, cells that did not run) and its ``time_flags`` as a
list. Exponent fits and crossovers leave out untrusted time cells (``time_trusted`` False) and say
so; cells not assessed are used as before. ``trust_summary`` and ``untrusted_cells`` feed the
report's banner and flagged-cells table.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd

from harness.core.names import STATUSES
from harness.render.units import to_giga, to_mib, to_ms, to_pct

PATTERN_ORDER = ("global", "local", "hierarchical")


PASS_ORDER = ("fwd", "fwd_bwd")


# One line of a plot / one cell of a heatmap: which run (and device, dtype) and which shape.
GROUP_KEYS = ["series", "shape", "pattern", "pattern_label", "causal", "pass"]


# ---- derived frames ---------------------------------------------------------------------------
def _floats(series: pd.Series) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce")
    if hasattr(values, "to_numpy"):
        values = values.to_numpy(dtype="float64", na_value=np.nan)
    return np.asarray(values, dtype="float64")


def _ints_or(df: pd.DataFrame, col: str, default: pd.Series) -> list[int]:
    """An integer column, with ``default`` where it is missing (runs before schema 3 have no such column)."""
    if col not in df.columns:
        return [int(x) for x in default]
    return [int(v) if pd.notna(v) else int(d) for v, d in zip(df[col], default)]


def _pattern_label(pattern: str, rows: pd.DataFrame) -> str:
    """``local (w=64)``, ``hierarchical (s=\u221aN)`` (s = round(sqrt(N))): the pattern with its parameter."""
    if pattern == "local":
        windows = sorted({int(w) for w in rows["window"].dropna()})
        return f"local (w={windows[0]})" if len(windows) == 1 else "local (w varies)" if windows else "local"
    if pattern == "hierarchical":
        pairs = {(int(n), int(s)) for n, s in zip(rows["seq_len"], rows["segment"]) if pd.notna(s)}
        segments = {s for _, s in pairs}
        if len(segments) == 1:
            return f"hierarchical (s={segments.pop()})"
        if pairs and all(s == max(1, round(math.sqrt(n))) for n, s in pairs):
            return "hierarchical (s=\u221aN)"
        return "hierarchical (s varies)" if pairs else "hierarchical"
    return pattern


def _trusted_value(v) -> bool | None:
    """One ``time_trusted`` cell as True, False or None (not assessed): nullable booleans, NumPy
    bools, NaN and the text a CSV round trip leaves all read the same."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        low = v.strip().lower()
        return True if low in ("true", "1", "yes") else False if low in ("false", "0", "no") else None
    return bool(v)


def parse_flags(v) -> list[str]:
    """One ``time_flags`` cell as a list of reasons: a JSON list as text (the stored form), a list,
    or "" / NA for none. Text that is not a JSON list is one reason."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return []
    if isinstance(v, str):
        if not v.strip():
            return []
        try:
            parsed = json.loads(v)
        except ValueError:
            return [v.strip()]
        v = parsed if isinstance(parsed, list) else [parsed]
    if isinstance(v, (list, tuple, np.ndarray)):
        return [str(x).strip() for x in v if x is not None and str(x).strip()]
    return [str(v)]


# "host busy 0.61 > 0.25": a reason with no ":" ends where its measured value and comparison begin.
_VALUE_COMPARISON = re.compile(r"\s+[-+]?(?:\d|\.\d)[^\s]*\s*(?:[<>]=?|\u2264|\u2265)")


def flag_reason(flag: str) -> str:
    """The kind of a flag, for counting: the text before its first ":" ("noisy: IQR/median 0.23 > 0.1"
    -> "noisy"), or, without one, the words before a "value > threshold" comparison ("host busy 0.61 >
    0.25" -> "host busy"), or else the whole flag."""
    head = flag.split(":", 1)[0].strip() if ":" in flag else flag.strip()
    if ":" not in flag:
        m = _VALUE_COMPARISON.search(head)
        if m and m.start() > 0:
            head = head[:m.start()].strip()
    return head or flag.strip()


def untrusted_mask(prep: pd.DataFrame) -> np.ndarray:
    """True for ok cells whose time was assessed and not trusted; False for every other cell
    (trusted, not assessed, not ok). A frame without ``time_trusted`` has no untrusted cell."""
    if "time_trusted" not in prep.columns:
        return np.zeros(len(prep), dtype=bool)
    ok = (prep["status"] == "ok").to_numpy()
    return np.array([_trusted_value(v) is False for v in prep["time_trusted"]], dtype=bool) & ok


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of a tidy frame (one or several runs) with the columns the report needs.

    ``series``: what one line stands for: the parts of (run_id, device, device_name, dtype) that vary, joined by
    " / " (the run id alone when nothing varies). ``shape``: ``B=1 H=8 D=64``. ``pattern_label``:
    the pattern with its window or segment. Metrics in report units (``time_ms``, ``time_iqr_ms``,
    ``peak_mem_mib``, ``gflop_per_s``, ``ceiling_pct``, ``rel_error_f``) are NaN unless status is ok.
    ``time_trusted``: True, False or None (not assessed: a run written before trust flags, which has
    no such column, or a cell that did not run); ``flags``: the cell's ``time_flags`` as a list and
    ``flags_text`` the same joined by "; ".
    """
    out = df.copy().reset_index(drop=True)
    for col in ("run_id", "variant", "pattern", "device", "dtype", "pass", "status", "reason"):
        out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str)
    out["causal"] = [bool(c) if pd.notna(c) else False for c in out["causal"]]
    ran = (out["status"] == "ok").to_list()
    trusted = out["time_trusted"] if "time_trusted" in out.columns else [None] * len(out)
    out["time_trusted"] = pd.Series([_trusted_value(t) if r else None for t, r in zip(trusted, ran)],
                                    index=out.index, dtype=object)
    raw_flags = out["time_flags"] if "time_flags" in out.columns else [None] * len(out)
    out["flags"] = pd.Series([parse_flags(f) if r else [] for f, r in zip(raw_flags, ran)], index=out.index,
                             dtype=object)
    out["flags_text"] = ["; ".join(f) for f in out["flags"]]
    for col in ("seq_len", "batch", "heads", "head_dim"):
        out[col] = pd.to_numeric(out[col]).astype("int64")
    ok = (out["status"] == "ok").to_numpy()
    for col, src, unit in (("time_ms", "time_s_median", to_ms), ("time_iqr_ms", "time_s_iqr", to_ms),
                           ("peak_mem_mib", "peak_mem_bytes", to_mib), ("gflop_per_s", "flops_per_s", to_giga),
                           ("ceiling_pct", "ceiling_fraction", to_pct), ("rel_error_f", "rel_error", None),
                           ("ceiling_gflop_per_s", "ceiling_flops_per_s", to_giga)):
        values = _floats(out[src])
        out[col] = np.where(ok, unit(values) if unit else values, np.nan)
    if "device_name" in out.columns:  # a run over several kinds of device: one series per kind
        out["device_name"] = out["device_name"].astype(object).where(out["device_name"].notna(), "").astype(str)
    varying = [k for k in ("run_id", "device", "device_name", "dtype") if k in out.columns and out[k].nunique() > 1]
    out["series"] = (out[varying].agg(" / ".join, axis=1) if varying else out["run_id"]).astype(str) \
        if len(out) else pd.Series(dtype=str)
    kv_heads = _ints_or(out, "kv_heads", out["heads"])
    q_lens = _ints_or(out, "q_len", out["seq_len"])
    out["shape"] = [f"B={b} H={h}" + (f" Hkv={kvh}" if kvh != h else "") + f" D={d}" + (f" q_len={q}" if q != n else "")
                    for b, h, kvh, d, q, n in zip(out["batch"], out["heads"], kv_heads, out["head_dim"], q_lens,
                                                  out["seq_len"])]
    labels = {p: _pattern_label(p, out[out["pattern"] == p]) for p in out["pattern"].unique()}
    out["pattern_label"] = out["pattern"].map(labels).astype(str) if len(out) else pd.Series(dtype=str)
    if "doc_lens" in out.columns:  # documents per sequence is a facet: one column per count
        docs = [len(json.loads(v)) if isinstance(v, str) and v else None for v in out["doc_lens"]]
        out["pattern_label"] = [f"document ({k} docs)" if p == "document" and k else lab
                                for p, k, lab in zip(out["pattern"], docs, out["pattern_label"])]
    out["facet_row"] = [f"{p} causal" if c else p for p, c in zip(out["pass"], out["causal"])]
    # matplotlib reads "$...$" as math; plot labels must show variant names literally.
    out["variant_plot"] = out["variant"].str.replace("$", r"\$", regex=False)
    return out


def _pattern_rank(label: str) -> int:
    kind = label.split(" ")[0]
    return PATTERN_ORDER.index(kind) if kind in PATTERN_ORDER else len(PATTERN_ORDER)


def facet_layout(prep: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Rows (pass, then causal) and columns (pattern) of every faceted figure, in reading order."""
    rows = sorted(prep["facet_row"].unique(), key=lambda r: (
        PASS_ORDER.index(r.split(" ")[0]) if r.split(" ")[0] in PASS_ORDER else 9, r))
    cols = sorted(prep["pattern_label"].unique(), key=lambda c: (_pattern_rank(c), c))
    return rows, cols


def worst_errors(prep: pd.DataFrame) -> pd.DataFrame:
    """Worst relative error (vs the float64 reference) per series, variant and pattern, where it was
    found, and whether it was measured on a smaller twin of the timed case."""
    keys = ["series", "variant", "pattern", "pattern_label"]
    cols = [*keys, "rel_error", "causal", "pass", "seq_len", "batch", "heads", "error_on_twin", "error_seq_len",
            "error_batch", "error_heads", "cells", "twins"]
    ok = prep[(prep["status"] == "ok") & np.isfinite(prep["rel_error_f"])]
    rows = []
    for key, g in ok.groupby(keys, sort=True):
        worst = g.loc[g["rel_error_f"].idxmax()]
        twin = bool(worst["error_on_twin"]) if pd.notna(worst["error_on_twin"]) else False
        twins = int(sum(bool(t) for t in g["error_on_twin"] if pd.notna(t)))
        rows.append({**dict(zip(keys, key)), "rel_error": float(worst["rel_error_f"]), "causal": worst["causal"],
                     "pass": worst["pass"], "seq_len": int(worst["seq_len"]), "error_on_twin": twin,
                     "batch": int(worst["batch"]), "heads": int(worst["heads"]),
                     **{c: int(worst[c]) if c in worst and pd.notna(worst[c]) else None
                        for c in ("error_seq_len", "error_batch", "error_heads")},
                     "cells": len(g), "twins": twins})
    return pd.DataFrame(rows, columns=cols)


def ceiling_summary(prep: pd.DataFrame) -> pd.DataFrame:
    """Best achieved GFLOP/s and fraction of the measured matmul ceiling per series, variant, pattern,
    causal and pass, with the N where it was reached."""
    keys = ["series", "shape", "variant", "pattern", "pattern_label", "causal", "pass"]
    cols = [*keys, "gflop_per_s", "ceiling_gflop_per_s", "ceiling_pct", "seq_len"]
    ok = prep[(prep["status"] == "ok") & np.isfinite(prep["gflop_per_s"])]
    rows = []
    for key, g in ok.groupby(keys, sort=True):
        best = g.loc[g["gflop_per_s"].idxmax()]
        rows.append({**dict(zip(keys, key)), "gflop_per_s": best["gflop_per_s"],
                     "ceiling_gflop_per_s": best["ceiling_gflop_per_s"], "ceiling_pct": best["ceiling_pct"],
                     "seq_len": int(best["seq_len"])})
    return pd.DataFrame(rows, columns=cols)


def status_counts(prep: pd.DataFrame) -> pd.DataFrame:
    """Cells per series and variant by status (ok, unsupported, oom, timeout, error), zeros included."""
    # local: core.case imports torch; keeps report start-up fast

    if prep.empty:
        return pd.DataFrame(columns=["series", "variant", *STATUSES, "total"])
    counts = prep.groupby(["series", "variant", "status"]).size().unstack("status", fill_value=0)
    for s in STATUSES:
        if s not in counts:
            counts[s] = 0
    extra = [c for c in counts.columns if c not in STATUSES]
    counts = counts[[*STATUSES, *extra]]
    counts["total"] = counts.sum(axis=1)
    return counts.reset_index()


def failure_reasons(prep: pd.DataFrame) -> pd.DataFrame:
    """Cells that did not run, grouped by series, variant, status and reason: how many, and where."""
    cols = ["series", "variant", "status", "reason", "cells", "patterns", "passes", "seq_lens"]
    bad = prep[prep["status"] != "ok"]
    rows = []
    for key, g in bad.groupby(["series", "status", "variant", "reason"], sort=True):
        series, status, variant, reason = key
        patterns = sorted({f"{p}{' causal' if c else ''}" for p, c in zip(g["pattern_label"], g["causal"])},
                          key=lambda x: (_pattern_rank(x), x))
        rows.append({"series": series, "variant": variant, "status": status, "reason": reason, "cells": len(g),
                     "patterns": ", ".join(patterns),
                     "passes": ", ".join(p for p in PASS_ORDER if p in set(g["pass"])) or ", ".join(set(g["pass"])),
                     "seq_lens": ", ".join(str(n) for n in sorted(set(int(n) for n in g["seq_len"])))})
    return pd.DataFrame(rows, columns=cols)


def failures(prep: pd.DataFrame) -> pd.DataFrame:
    """Every cell whose status is not ok, with its status and reason."""
    cols = ["series", "variant", "pattern_label", "causal", "pass", "seq_len", "shape", "status", "reason"]
    bad = prep[prep["status"] != "ok"]
    return bad[cols].sort_values(["series", "status", "variant", "pattern_label", "causal", "pass", "seq_len"],
                                 kind="stable").reset_index(drop=True)


def trust_summary(prep: pd.DataFrame) -> dict:
    """How far the ok cells of a prepared frame can be trusted: ``measured`` (ok cells),
    ``trusted``, ``untrusted``, ``not_assessed`` and ``reasons``, a list of (reason, untrusted cells
    with it) by count then name, where a reason is ``flag_reason`` of each flag. An untrusted cell
    with no flag counts as "no reason recorded"."""
    ok = prep[prep["status"] == "ok"]
    values = [_trusted_value(v) for v in ok["time_trusted"]] if "time_trusted" in ok.columns else [None] * len(ok)
    flags = ok["flags"] if "flags" in ok.columns else [[] for _ in range(len(ok))]
    counts: dict[str, int] = {}
    for t, fl in zip(values, flags):
        if t is False:
            for reason in sorted({flag_reason(f) for f in fl}) or ["no reason recorded"]:
                counts[reason] = counts.get(reason, 0) + 1
    return {"measured": len(values), "trusted": sum(t is True for t in values),
            "untrusted": sum(t is False for t in values), "not_assessed": sum(t is None for t in values),
            "reasons": sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def untrusted_cells(prep: pd.DataFrame) -> pd.DataFrame:
    """Every ok cell whose time is not trusted, with its measurement and its flags (``flags_text``)."""
    cols = ["series", "shape", "variant", "pattern_label", "causal", "pass", "seq_len", "time_ms", "time_iqr_ms",
            "time_n_samples", "flags_text"]
    bad = prep[untrusted_mask(prep)]
    return bad.reindex(columns=cols).sort_values(["series", "shape", "variant", "pattern_label", "causal", "pass",
                                                  "seq_len"], kind="stable").reset_index(drop=True)
