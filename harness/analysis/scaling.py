"""How time and memory scale with the sequence length N, in base units (seconds, bytes): fitted
exponents, the N where the faster of two variants changes, and every cell against a baseline variant.

Each function groups a results frame by ``keys``, the columns that hold one line of time against N
fixed (the caller's choice: case fields, or the labels a report draws by). Only ok cells are used
(``wrong`` cells, whose output is not what their pattern defines, are left out and counted), and
untrusted ones (``time_trusted`` False, ``harness.analysis.trust_frame``) are left out of the time fits
and the order changes and counted; cells not assessed are used as measured.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd

from harness.analysis.trust_frame import untrusted_mask


def _ok_values(frame: pd.DataFrame, column: str) -> pd.Series:
    """``column`` as floats where the cell ran ok, NaN elsewhere."""
    values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return values.where((frame["status"] == "ok").to_numpy())


def exponent_fits(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Scaling exponent per group of ``keys`` (with ``variant``): the least-squares slope of log(time)
    and of log(peak memory) against log(N) over the ok cells, NaN with fewer than two distinct N.

    Columns: ``time_exponent``, ``mem_exponent``, ``n_min``, ``n_max``, ``n_points`` (distinct N that
    ran ok), ``untrusted`` (cells left out of the time fit) and ``untrusted_ns`` (their N),
    ``failed_ns`` (N where no cell ran ok), ``wrong_ns`` (N of the wrong cells, left out),
    ``mem_zero`` (True when some N had only cells with 0 bytes of peak memory, left out of the memory
    fit). Peak memory does not depend on how busy the machine
    was, so the memory fit keeps untrusted cells.
    """
    cols = [*keys, "time_exponent", "mem_exponent", "n_min", "n_max", "n_points", "untrusted", "untrusted_ns",
            "failed_ns", "wrong_ns", "mem_zero"]
    frame = frame.assign(_untrusted=untrusted_mask(frame), _time=_ok_values(frame, "time_s_median"),
                         _mem=_ok_values(frame, "peak_mem_bytes"))
    rows = []
    for key, g in frame.groupby(keys, sort=True):
        okg = g[g["status"] == "ok"]
        if okg.empty:
            continue
        rec = dict(zip(keys, key))
        for name, col in (("time", "_time"), ("mem", "_mem")):
            fit = okg[~okg["_untrusted"]] if name == "time" else okg
            pts = fit[np.isfinite(fit[col]) & (fit[col] > 0)].groupby("seq_len")[col].median()
            if len(pts) >= 2:
                slope = float(np.polyfit(np.log(pts.index.to_numpy(dtype=float)), np.log(pts.to_numpy()), 1)[0])
            else:
                slope = math.nan
            rec[f"{name}_exponent"] = slope
            if name == "mem":
                rec["mem_zero"] = bool(len(okg) > len(pts) and len(okg["seq_len"].unique()) > len(pts))
        ns = sorted(int(n) for n in okg["seq_len"].unique())
        untrusted = sorted(int(n) for n in okg.loc[okg["_untrusted"], "seq_len"])
        rec.update(n_min=ns[0], n_max=ns[-1], n_points=len(ns), untrusted=len(untrusted), untrusted_ns=untrusted,
                   failed_ns=sorted(int(n) for n in g.loc[g["status"] != "ok", "seq_len"].unique() if n not in ns),
                   wrong_ns=sorted(int(n) for n in g.loc[g["status"] == "wrong", "seq_len"]))
        rows.append(rec)
    return pd.DataFrame(rows, columns=cols)


def order_changes(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Where the faster of two variants changes with N: per group of ``keys`` and pair of variants
    measured at two or more common N whose order flips, the winner at the largest N (``faster``), the
    smallest N from which it is faster at every larger measured N (``from_n``), the N below it
    (``slower_at_n``), how often the order changes (``flips``) and the pair's untrusted and wrong cells
    left out before the comparison (``untrusted``, ``wrong``)."""
    cols = [*keys, "faster", "slower", "from_n", "slower_at_n", "flips", "untrusted", "wrong"]
    wrong = frame[frame["status"] == "wrong"].groupby([*keys, "variant"]).size().to_dict() \
        if (frame["status"] == "wrong").any() else {}
    time_s = _ok_values(frame, "time_s_median")
    ok = frame.assign(_time=time_s)[np.isfinite(time_s).to_numpy()]
    bad = untrusted_mask(ok)
    left_out = ok[bad].groupby([*keys, "variant"]).size().to_dict() if bad.any() else {}
    ok = ok[~bad]
    rows = []
    for key, g in ok.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        piv = g.pivot_table(index="seq_len", columns="variant", values="_time", aggfunc="median").sort_index()
        for a, b in combinations(sorted(piv.columns), 2):
            both = piv[[a, b]].dropna()
            if len(both) < 2:
                continue
            a_faster = (both[a] < both[b]).to_numpy()
            if a_faster.all() or not a_faster.any():
                continue
            win, lose = (a, b) if a_faster[-1] else (b, a)
            wins = (both[win] < both[lose]).to_numpy()
            start = len(wins) - 1
            while start > 0 and wins[start - 1]:
                start -= 1
            ns = both.index.to_list()
            rows.append({**dict(zip(keys, key)), "faster": win, "slower": lose, "from_n": int(ns[start]),
                         "slower_at_n": int(ns[start - 1]), "flips": int((wins[1:] != wins[:-1]).sum()),
                         "untrusted": sum(left_out.get((*key, v), 0) for v in (a, b)),
                         "wrong": sum(wrong.get((*key, v), 0) for v in (a, b))})
    return pd.DataFrame(rows, columns=cols)


def baseline_ratios(frame: pd.DataFrame, baseline: str, keys: list[str]) -> pd.DataFrame:
    """Every cell of the other variants, joined on ``keys`` with the baseline's cell: each row keeps
    its columns and gains ``baseline_status`` ("not run" where the baseline has no such cell),
    ``baseline_time_s_median`` and ``baseline_peak_mem_bytes`` (NaN unless the baseline ran ok),
    ``speedup`` (baseline time / the cell's) and ``memory_saving`` (baseline peak / the cell's), NaN
    where either did not run. Empty when the baseline is not in the frame."""
    base = frame[frame["variant"] == baseline]
    if base.empty:
        return frame.iloc[:0].assign(baseline_status=None, baseline_time_s_median=None,
                                     baseline_peak_mem_bytes=None, speedup=None, memory_saving=None)
    base = base.assign(baseline_time_s_median=_ok_values(base, "time_s_median"),
                       baseline_peak_mem_bytes=_ok_values(base, "peak_mem_bytes"))
    base = base[[*keys, "status", "baseline_time_s_median", "baseline_peak_mem_bytes"]].drop_duplicates(keys)
    others = frame[frame["variant"] != baseline]
    rel = others.merge(base.rename(columns={"status": "baseline_status"}), on=keys, how="left")
    rel["baseline_status"] = rel["baseline_status"].fillna("not run")
    time_s, mem = _ok_values(rel, "time_s_median"), _ok_values(rel, "peak_mem_bytes")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel["speedup"] = rel["baseline_time_s_median"] / time_s
        rel["memory_saving"] = rel["baseline_peak_mem_bytes"] / mem.where(mem > 0)
    for col in ("speedup", "memory_saving"):
        rel[col] = rel[col].where(np.isfinite(rel[col]))
    return rel.reset_index(drop=True)

