"""Scaling and comparison tables from a prepared frame (``harness.analysis.derived.prepare``): fitted
time and memory exponents against N, crossovers between variants, and every cell relative to a
baseline variant. Untrusted cells (``time_trusted`` false) are left out of time fits and crossovers."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd

from harness.analysis.derived import GROUP_KEYS, untrusted_mask


def fit_exponents(prep: pd.DataFrame) -> pd.DataFrame:
    """Scaling exponent per (series, shape, variant, pattern, causal, pass): the least-squares slope of
    log(time) and of log(peak memory) against log(N) over the ok cells. Fewer than two distinct
    sequence lengths give NaN and a note, never an error. Untrusted cells (``time_trusted`` False)
    are left out of the time fit, counted in ``untrusted`` and named in the note; peak memory does not
    depend on how busy the machine was, so the memory fit keeps them. Cells not assessed are used."""
    keys = ["series", "shape", "variant", "pattern", "pattern_label", "causal", "pass"]
    cols = [*keys, "time_exponent", "mem_exponent", "n_min", "n_max", "n_points", "range", "untrusted", "note"]
    prep = prep.assign(_untrusted=untrusted_mask(prep))
    rows = []
    for key, g in prep.groupby(keys, sort=True):
        okg = g[g["status"] == "ok"]
        if okg.empty:
            continue
        rec = dict(zip(keys, key))
        notes = []
        for name, col in (("time", "time_ms"), ("mem", "peak_mem_mib")):
            fit = okg[~okg["_untrusted"]] if name == "time" else okg
            pts = fit[np.isfinite(fit[col]) & (fit[col] > 0)].groupby("seq_len")[col].median()
            if len(pts) >= 2:
                slope = float(np.polyfit(np.log(pts.index.to_numpy(dtype=float)), np.log(pts.to_numpy()), 1)[0])
            else:
                slope = math.nan
            rec[f"{name}_exponent"] = slope
            dropped = len(okg) - len(pts) if name == "mem" else 0
            if dropped > 0 and len(okg["seq_len"].unique()) > len(pts):
                notes.append("cells with 0 bytes of peak memory left out of the memory fit")
        ns = sorted(int(n) for n in okg["seq_len"].unique())
        failed = sorted(int(n) for n in g.loc[g["status"] != "ok", "seq_len"].unique() if n not in ns)
        rec.update(n_min=ns[0], n_max=ns[-1], n_points=len(ns),
                   range=f"N = {ns[0]}..{ns[-1]} ({len(ns)} points)" if len(ns) > 1 else f"N = {ns[0]} only")
        if len(ns) < 2:
            notes.append("n/a: one sequence length, no slope")
        untrusted = sorted(int(n) for n in okg.loc[okg["_untrusted"], "seq_len"])
        rec["untrusted"] = len(untrusted)
        if untrusted:
            left = len(set(ns) - set(untrusted))
            notes.append(f"{_cells(len(untrusted), 'untrusted cell')} (N = {', '.join(map(str, untrusted))}) left "
                         "out of the time fit" + ("; too few trusted sizes for a time slope" if left < 2 <= len(ns)
                                                  else ""))
        if failed:
            notes.append("not ok at N = " + ", ".join(map(str, failed)))
        rec["note"] = "; ".join(notes)
        rows.append(rec)
    return pd.DataFrame(rows, columns=cols)


def _cells(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def crossovers(prep: pd.DataFrame) -> pd.DataFrame:
    """Where the faster of two variants changes with N: for each pair measured at two or more common
    sequence lengths whose order flips, the winner at the largest N and the smallest N from which it
    is faster at every larger measured N. Untrusted cells (``time_trusted`` False) are left out
    before the comparison; ``untrusted`` counts those of the pair in the panel and ``text`` says so."""
    cols = [*GROUP_KEYS, "faster", "slower", "from_n", "slower_at_n", "flips", "untrusted", "text"]
    ok = prep[(prep["status"] == "ok") & np.isfinite(prep["time_ms"])]
    bad = untrusted_mask(ok)
    left_out = ok[bad].groupby([*GROUP_KEYS, "variant"]).size().to_dict() if bad.any() else {}
    ok = ok[~bad]
    rows = []
    for key, g in ok.groupby(GROUP_KEYS, sort=True):
        piv = g.pivot_table(index="seq_len", columns="variant", values="time_ms", aggfunc="median").sort_index()
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
            flips = int((wins[1:] != wins[:-1]).sum())
            text = f"{win} is faster than {lose} from N = {ns[start]} (slower at N = {ns[start - 1]})"
            if flips > 1:
                text += f"; the order changes {flips} times over the measured range"
            untrusted = sum(left_out.get((*key, v), 0) for v in (a, b))
            if untrusted:
                text += f"; {_cells(untrusted, 'untrusted cell')} left out"
            rows.append({**dict(zip(GROUP_KEYS, key)), "faster": win, "slower": lose, "from_n": int(ns[start]),
                         "slower_at_n": int(ns[start - 1]), "flips": flips, "untrusted": untrusted, "text": text})
    return pd.DataFrame(rows, columns=cols)


def relative_to_baseline(prep: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Speedup (baseline time / variant time) and memory saving (baseline peak / variant peak) of every
    other variant, per cell, against the baseline measured in the same series, shape and pattern.
    NaN where either did not run; ``status`` and ``baseline_status`` say why."""
    keys = [*GROUP_KEYS, "seq_len"]
    cols = [*keys, "facet_row", "variant", "variant_plot", "status", "baseline_status", "time_ms", "baseline_time_ms",
            "peak_mem_mib", "baseline_peak_mem_mib", "speedup", "memory_saving"]
    base = prep[prep["variant"] == baseline]
    if base.empty:
        return pd.DataFrame(columns=cols)
    base = base[[*keys, "status", "time_ms", "peak_mem_mib"]].drop_duplicates(keys).rename(columns={
        "status": "baseline_status", "time_ms": "baseline_time_ms", "peak_mem_mib": "baseline_peak_mem_mib"})
    rel = prep[prep["variant"] != baseline].merge(base, on=keys, how="left")
    rel["baseline_status"] = rel["baseline_status"].fillna("not run")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel["speedup"] = rel["baseline_time_ms"] / rel["time_ms"]
        mem = rel["peak_mem_mib"].where(rel["peak_mem_mib"] > 0)
        rel["memory_saving"] = rel["baseline_peak_mem_mib"] / mem
    for col in ("speedup", "memory_saving"):
        rel[col] = rel[col].where(np.isfinite(rel[col]))
    return rel[cols].reset_index(drop=True)
