"""The report's tables of cells, from a prepared frame (``harness.render.prepare.prepare``): the worst
error per variant (wrong cells included), the best fraction of the matmul ceiling (ok cells only), cells
by status, the cells that are not ok, wrong ones included (one by one and grouped by reason), and the
ok cells whose time is not trusted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis.trust_frame import untrusted_mask
from harness.core.names import STATUSES
from harness.render.prepare import PASS_ORDER, pattern_rank, wrong_values


def worst_errors(prep: pd.DataFrame) -> pd.DataFrame:
    """Worst relative error (vs the float64 reference) per series, variant and pattern, where it was
    found, and whether it was measured on a smaller twin of the timed case. ``wrong`` cells count
    (their error is the reason they are wrong): ``cells`` is the ok cells with an error, ``wrong`` the
    wrong ones; a wrong cell with no finite error (a non-finite output) is the worst, at infinity."""
    keys = ["series", "variant", "pattern", "pattern_label"]
    cols = [*keys, "rel_error", "causal", "pass", "seq_len", "batch", "heads", "error_on_twin", "error_seq_len",
            "error_batch", "error_heads", "cells", "twins", "wrong"]
    is_wrong = (prep["status"] == "wrong").to_numpy()
    wrong_error = wrong_values(prep, "rel_error_f")
    error = np.where(is_wrong, np.where(np.isfinite(wrong_error), wrong_error, np.inf), prep["rel_error_f"])
    checked = prep.assign(_error=error, _wrong=is_wrong)
    checked = checked[((checked["status"] == "ok") & np.isfinite(checked["_error"])) | checked["_wrong"]]
    rows = []
    for key, g in checked.groupby(keys, sort=True):
        worst = g.loc[g["_error"].idxmax()]
        twin = bool(worst["error_on_twin"]) if pd.notna(worst["error_on_twin"]) else False
        twins = int(sum(bool(t) for t in g["error_on_twin"] if pd.notna(t)))
        rows.append({**dict(zip(keys, key)), "rel_error": float(worst["_error"]), "causal": worst["causal"],
                     "pass": worst["pass"], "seq_len": int(worst["seq_len"]), "error_on_twin": twin,
                     "batch": int(worst["batch"]), "heads": int(worst["heads"]),
                     **{c: int(worst[c]) if c in worst and pd.notna(worst[c]) else None
                        for c in ("error_seq_len", "error_batch", "error_heads")},
                     "cells": int((~g["_wrong"]).sum()), "twins": twins, "wrong": int(g["_wrong"].sum())})
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
    """Cells per series and variant by status (``STATUSES``: ok, wrong, unsupported, oom, timeout,
    error), zeros included."""
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
    """Cells not ok (wrong ones, which ran, included), grouped by series, variant, status and reason:
    how many, and where."""
    cols = ["series", "variant", "status", "reason", "cells", "patterns", "passes", "seq_lens"]
    bad = prep[prep["status"] != "ok"]
    rows = []
    for key, g in bad.groupby(["series", "status", "variant", "reason"], sort=True):
        series, status, variant, reason = key
        patterns = sorted({f"{p}{' causal' if c else ''}" for p, c in zip(g["pattern_label"], g["causal"])},
                          key=lambda x: (pattern_rank(x), x))
        rows.append({"series": series, "variant": variant, "status": status, "reason": reason, "cells": len(g),
                     "patterns": ", ".join(patterns),
                     "passes": ", ".join(p for p in PASS_ORDER if p in set(g["pass"])) or ", ".join(set(g["pass"])),
                     "seq_lens": ", ".join(str(n) for n in sorted(set(int(n) for n in g["seq_len"])))})
    return pd.DataFrame(rows, columns=cols)


def failures(prep: pd.DataFrame) -> pd.DataFrame:
    """Every cell whose status is not ok (wrong included), with its status and reason (and ``repro``, the
    command that measures it again, where the frame has it)."""
    cols = ["series", "variant", "pattern_label", "causal", "pass", "seq_len", "shape", "status", "reason",
            *(["repro"] if "repro" in prep.columns else [])]
    bad = prep[prep["status"] != "ok"]
    return bad[cols].sort_values(["series", "status", "variant", "pattern_label", "causal", "pass", "seq_len"],
                                 kind="stable").reset_index(drop=True)


def untrusted_cells(prep: pd.DataFrame) -> pd.DataFrame:
    """Every ok cell whose time is not trusted, with its measurement and its flags (``flags_text``) (and
    ``repro``, the command that measures it again, where the frame has it)."""
    cols = ["series", "shape", "variant", "pattern_label", "causal", "pass", "seq_len", "time_ms", "time_iqr_ms",
            "time_n_samples", "flags_text", *(["repro"] if "repro" in prep.columns else [])]
    bad = prep[untrusted_mask(prep)]
    return bad.reindex(columns=cols).sort_values(["series", "shape", "variant", "pattern_label", "causal", "pass",
                                                  "seq_len"], kind="stable").reset_index(drop=True)
