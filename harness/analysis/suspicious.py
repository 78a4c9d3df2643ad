"""Speedups too large to take on trust: a variant more than ``SUSPICIOUS_FACTOR`` x faster than the
best other variant on the same case is flagged for a look (a result computed ahead of time, a skipped
part of the pattern, a timing that missed the work). A flag is a prompt to check, not a verdict: a
kernel that does less work by design (a local window against dense attention) can be that fast.

Pure: a results frame in (base units), a frame of flags out. Only ok cells compete; a wrong cell is
never the fastest nor the best other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SUSPICIOUS_FACTOR = 10.0


def suspicious_speedups(frame: pd.DataFrame, keys: list[str], factor: float = SUSPICIOUS_FACTOR) -> pd.DataFrame:
    """Per group of ``keys`` (one case but for its variant: the caller names the case fields or labels
    that fix it), the fastest ok variant when the best other ok variant's median time is more than
    ``factor`` x its own. Columns: ``keys``, ``variant``, ``time_s_median``, ``other_variant``,
    ``other_time_s_median`` and ``ratio`` (the other's time / the variant's), largest ratio first.
    A variant with several rows in a group is taken at its median."""
    cols = [*keys, "variant", "time_s_median", "other_variant", "other_time_s_median", "ratio"]
    if frame.empty or "time_s_median" not in frame.columns:
        return pd.DataFrame(columns=cols)
    time_s = pd.to_numeric(frame["time_s_median"], errors="coerce").astype("float64")
    ok = frame.assign(_time=time_s)[((frame["status"] == "ok") & np.isfinite(time_s) & (time_s > 0)).to_numpy()]
    rows = []
    for key, g in ok.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        times = g.groupby("variant")["_time"].median().sort_values(kind="stable")
        if len(times) < 2:
            continue
        ratio = float(times.iloc[1] / times.iloc[0])
        if ratio > factor:
            rows.append({**dict(zip(keys, key)), "variant": times.index[0], "time_s_median": float(times.iloc[0]),
                         "other_variant": times.index[1], "other_time_s_median": float(times.iloc[1]),
                         "ratio": ratio})
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values("ratio", ascending=False, kind="stable").reset_index(drop=True)
