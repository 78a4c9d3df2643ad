"""Quality versus cost: what each pattern configuration gives up against exact global attention (its
``fidelity_*`` columns) and what it costs (its fastest trusted variant), in base units (seconds,
bytes, fractions). Pure functions of frames; no display strings.

A *configuration* is a pattern with its parameters (``CONFIG_KEYS``: pattern, window, segment, sinks,
stride, globals, topk; absent columns read as NA). Configurations compete within a *problem*
(``PROBLEM_KEYS``): one run, shape and pass, one causal flag (a pattern's error is measured against
global attention with its own causal flag), one input source (``inputs``) and layer (``inputs_layer``).
Its cost is the fastest ``ok`` variant with a trusted time (``wrong`` and failed rows never count; an
untrusted time only where no variant has a trusted one, and ``time_trusted`` then says so), with that
row's peak memory. Global attention is exact by definition: its errors, mass dropped and KL are 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.analysis.trust_frame import trusted_value
from harness.store.schema import floats

GLOBAL = "global"
SHAPE_KEYS = ("run_id", "device", "dtype", "batch", "heads", "kv_heads", "head_dim", "seq_len", "q_len", "pass")
INPUT_KEYS = ("inputs", "inputs_layer")
PARAM_KEYS = ("window", "segment", "sinks", "stride", "globals", "topk")
CONFIG_KEYS = ("pattern", *PARAM_KEYS)
PROBLEM_KEYS = (*SHAPE_KEYS, "causal", *INPUT_KEYS)
FIDELITY_COLUMNS = ("fidelity_out_rel_error", "fidelity_out_rel_error_p50", "fidelity_out_rel_error_p90",
                    "fidelity_mass_dropped", "fidelity_mass_dropped_p90", "fidelity_kl",
                    "fidelity_topk_out_rel_error", "fidelity_ppl", "fidelity_rows")
EXACT_FOR_GLOBAL = FIDELITY_COLUMNS[:6]  # zero for global attention by definition
THRESHOLDS = (0.01, 0.05, 0.10)
COST_COLUMNS = ["variant", "time_s_median", "peak_mem_bytes", "time_trusted", "n_variants", "n_trusted"]


def has_fidelity(df: pd.DataFrame) -> bool:
    """Whether ``df`` has output errors to show (a run written before fidelity columns has none)."""
    return "fidelity_out_rel_error" in df.columns and bool(
        pd.to_numeric(df["fidelity_out_rel_error"], errors="coerce").notna().any())


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with every input and parameter column (absent ones NA; a run before input sources had
    random inputs only), integers as Int64, and no parameters on global rows."""
    out = df.copy().reset_index(drop=True)
    if "inputs" not in out.columns:
        out["inputs"] = None
    out["inputs"] = out["inputs"].astype(object).where(out["inputs"].notna(), "random").astype(str)
    for col in ("inputs_layer", *PARAM_KEYS):
        values = pd.to_numeric(out[col], errors="coerce") if col in out.columns else pd.Series(np.nan, index=out.index)
        out[col] = values.astype("Float64").round().astype("Int64")
    out["causal"] = [bool(c) if pd.notna(c) else False for c in out["causal"]] if "causal" in out.columns else False
    is_global = (out["pattern"].astype(str) == GLOBAL).to_numpy() if "pattern" in out.columns \
        else np.zeros(len(out), dtype=bool)
    for col in PARAM_KEYS:
        out.loc[is_global, col] = pd.NA
    return out


def _keys(df: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    return [k for k in keys if k in df.columns]


def _groups(df: pd.DataFrame, keys: list[str]):
    """(dict of key values, group) for each distinct value of ``keys`` (NA kept), in sorted order."""
    if not keys:
        yield {}, df
        return
    for key, g in df.groupby(keys, sort=True, dropna=False):
        yield dict(zip(keys, key if isinstance(key, tuple) else (key,))), g


def _int_columns(out: pd.DataFrame) -> pd.DataFrame:
    for col in ("inputs_layer", *PARAM_KEYS):
        if col in out.columns:
            out[col] = pd.array([None if pd.isna(v) else int(v) for v in out[col]], dtype="Int64")
    return out


def configurations(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration and problem of a tidy frame: its key columns (``PROBLEM_KEYS`` and
    ``CONFIG_KEYS`` that the frame has, inputs and parameters always), the fastest eligible ``variant``
    with its ``time_s_median`` and ``peak_mem_bytes``, that row's ``time_trusted`` (True; False or None
    when no variant had a trusted time and an untrusted or unassessed one stands in), ``n_variants``
    (ok rows) and ``n_trusted``, and every ``FIDELITY_COLUMNS`` (the chosen row's value, else the worst
    of the configuration's other ok rows; NaN where none has one; 0 for global's exact ones)."""
    frame = _normalize(df)
    keys = _keys(frame, (*PROBLEM_KEYS, *CONFIG_KEYS))
    columns = [*keys, *COST_COLUMNS, *FIDELITY_COLUMNS]
    if frame.empty or "status" not in frame.columns:
        return pd.DataFrame(columns=columns)
    time_all = floats(frame["time_s_median"]) if "time_s_median" in frame.columns else np.full(len(frame), np.nan)
    ok = frame[(frame["status"].astype(str) == "ok").to_numpy() & np.isfinite(time_all) & (time_all > 0)]
    rows = []
    for rec, g in _groups(ok, keys):
        time_s = floats(g["time_s_median"])
        trust = [trusted_value(t) for t in g["time_trusted"]] if "time_trusted" in g.columns else [None] * len(g)
        names = [str(v) for v in g["variant"]]
        trusted = [i for i, t in enumerate(trust) if t is True]
        best = min(trusted or range(len(g)), key=lambda i: (time_s[i], names[i]))
        rec.update(variant=names[best], time_s_median=float(time_s[best]),
                   peak_mem_bytes=floats(g["peak_mem_bytes"])[best] if "peak_mem_bytes" in g.columns else math.nan,
                   time_trusted=trust[best], n_variants=len(g), n_trusted=len(trusted))
        for col in FIDELITY_COLUMNS:
            values = floats(g[col]) if col in g.columns else np.full(len(g), np.nan)
            finite = values[np.isfinite(values)]
            rec[col] = float(values[best]) if np.isfinite(values[best]) else float(finite.max()) if len(finite) \
                else math.nan
            if rec["pattern"] == GLOBAL and col in EXACT_FOR_GLOBAL and not math.isfinite(rec[col]):
                rec[col] = 0.0
        rows.append(rec)
    out = pd.DataFrame(rows, columns=columns)
    out["time_trusted"] = pd.Series(list(out["time_trusted"]), index=out.index, dtype=object)
    for col in ("time_s_median", "peak_mem_bytes", *FIDELITY_COLUMNS):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    return _int_columns(out)


def pareto(df: pd.DataFrame, cost: str = "time_s_median", error: str = "fidelity_out_rel_error",
           by: Sequence[str] | None = None) -> pd.Series:
    """True for each row no other row of its group dominates (at most as costly and at most as wrong,
    and strictly better in one); rows with the same cost and error are both kept. A row without a
    finite cost or error is never on the frontier. ``by``: the columns that make a group (default: the
    ``PROBLEM_KEYS`` the frame has; ``()`` for the whole frame)."""
    keep = pd.Series(False, index=df.index, dtype=bool)
    for _, g in _groups(df, _keys(df, PROBLEM_KEYS if by is None else by)):
        c, e = floats(g[cost]), floats(g[error])
        valid = np.isfinite(c) & np.isfinite(e)
        c, e, idx = c[valid], e[valid], g.index[valid]
        if not len(idx):
            continue
        no_worse = (c[None, :] <= c[:, None]) & (e[None, :] <= e[:, None])  # [i, j]: j is no worse than i
        better = (c[None, :] < c[:, None]) | (e[None, :] < e[:, None])
        keep.loc[idx] = ~(no_worse & better).any(axis=1)
    return keep


def _mode(values) -> str:
    counts = pd.Series([str(v) for v in values]).value_counts()
    return sorted(counts.index[counts == counts.max()])[0]


def over_layers(confs: pd.DataFrame) -> pd.DataFrame:
    """``configurations`` rows taken over the layers of each layered input source: one row per problem
    (``inputs_layer`` NA) and configuration present in every layer, judged on its worst layer (largest
    error, mass dropped, KL, perplexity), the median of its times and the largest peak; ``variant``
    the one fastest in most layers, ``time_trusted`` False if any layer's is, and ``n_layers``. Rows
    of unlayered sources (random) pass through unchanged, with ``n_layers`` 0."""
    confs = _normalize(confs)
    layered = confs["inputs_layer"].notna()
    flat = confs[~layered].assign(n_layers=0)
    problem = _keys(confs, [k for k in PROBLEM_KEYS if k != "inputs_layer"])
    rows = []
    for rec, g in _groups(confs[layered], problem):
        n = g["inputs_layer"].nunique()
        for crec, c in _groups(g, _keys(g, CONFIG_KEYS)):
            if c["inputs_layer"].nunique() < n:
                continue  # not measured on every layer: its worst layer is unknown
            trust = [trusted_value(t) for t in c["time_trusted"]]
            row = {**rec, **crec, "inputs_layer": pd.NA, "variant": _mode(c["variant"]),
                   "time_s_median": float(np.median(floats(c["time_s_median"]))),
                   "peak_mem_bytes": float(np.nanmax(floats(c["peak_mem_bytes"]))) if np.isfinite(
                       floats(c["peak_mem_bytes"])).any() else math.nan,
                   "time_trusted": False if False in trust else True if all(t is True for t in trust) else None,
                   "n_variants": int(c["n_variants"].max()), "n_trusted": int(c["n_trusted"].min()), "n_layers": n}
            for col in FIDELITY_COLUMNS:
                v = floats(c[col]) if col in c.columns else np.array([np.nan])
                row[col] = float(v[np.isfinite(v)].max()) if np.isfinite(v).any() else math.nan
            rows.append(row)
    new = pd.DataFrame(rows, columns=[*flat.columns])
    out = pd.concat([flat, new], ignore_index=True) if len(flat) and len(new) else new if len(new) else flat
    out["time_trusted"] = pd.Series(list(out["time_trusted"]), index=out.index, dtype=object)
    return _int_columns(out.reset_index(drop=True))


def _with_global(cands: pd.DataFrame, confs: pd.DataFrame, shape: dict) -> pd.DataFrame:
    """``cands`` with a global attention row: its own, else one standing for global's rows of the same
    shape and causal flag on any input source (exact on every input; its time does not depend on the
    values): their median time, largest peak and most common fastest variant."""
    if (cands["pattern"].astype(str) == GLOBAL).any():
        return cands
    mask = confs["pattern"].astype(str) == GLOBAL
    for k, v in shape.items():
        mask &= confs[k].isna() if pd.isna(v) else confs[k] == v
    glob = confs[mask.fillna(False).astype(bool).to_numpy()]
    if glob.empty:
        return cands
    trust = [trusted_value(t) for t in glob["time_trusted"]]
    row = {**{k: cands[k].iloc[0] for k in cands.columns if k in PROBLEM_KEYS and len(cands)}, **shape,
           "pattern": GLOBAL, "variant": _mode(glob["variant"]),
           "time_s_median": float(np.median(floats(glob["time_s_median"]))),
           "peak_mem_bytes": float(np.nanmax(floats(glob["peak_mem_bytes"]))),
           "time_trusted": False if False in trust else True if all(t is True for t in trust) else None,
           **dict.fromkeys(EXACT_FOR_GLOBAL, 0.0)}
    extra = pd.DataFrame([row], columns=cands.columns)
    return pd.concat([cands, extra], ignore_index=True) if len(cands) else extra


def _reference(cands: pd.DataFrame) -> tuple[float, float]:
    """(time, peak) of global attention among ``cands`` (NaN when it did not run)."""
    own = cands[cands["pattern"].astype(str) == GLOBAL]
    if own.empty:
        return math.nan, math.nan
    return float(floats(own["time_s_median"]).min()), float(np.nanmax(floats(own["peak_mem_bytes"])))


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0 else math.nan


def _pick(cands: pd.DataFrame, threshold: float, cost: str, error: str) -> dict:
    err, price = floats(cands[error]), floats(cands[cost])
    fits = np.isfinite(err) & (err <= threshold) & np.isfinite(price)
    if not fits.any():
        return {"met": False}
    order = sorted(np.flatnonzero(fits), key=lambda i: (price[i], err[i], str(cands.iloc[i]["pattern"])))
    win = cands.iloc[order[0]]
    return {"met": True, **{k: win[k] for k in (*CONFIG_KEYS, "variant", "time_s_median", "peak_mem_bytes",
                                                   "time_trusted", *FIDELITY_COLUMNS)}}


def cheapest_within(df: pd.DataFrame, thresholds: Sequence[float] = THRESHOLDS, cost: str = "time_s_median",
                    error: str = "fidelity_out_rel_error") -> pd.DataFrame:
    """Per problem (input source, shape, causal flag, layer) and threshold: the cheapest configuration
    (by ``cost``) whose ``error`` is at most the threshold, global attention included (error 0). A
    layered source also gets an ``all_layers`` row judged on each configuration's worst layer
    (``over_layers``). Columns: the problem keys, ``all_layers``, ``threshold``, ``met`` (False: no
    configuration meets it, and every value of the row is NA), the configuration, ``variant``, its
    ``time_s_median``, ``peak_mem_bytes``, ``time_trusted`` and fidelity columns, global's time and
    peak (``global_time_s_median``, ``global_peak_mem_bytes``), ``speedup`` (global's time / its time),
    ``memory_saving`` (global's peak / its peak), ``n_configurations`` and ``n_layers``.
    ``df``: a tidy frame, or ``configurations`` of one."""
    confs = _normalize(df if "n_variants" in df.columns else configurations(df))
    problem = _keys(confs, [k for k in PROBLEM_KEYS if k != "inputs_layer"])
    shape_keys = _keys(confs, (*SHAPE_KEYS, "causal"))
    pick_cols = [*CONFIG_KEYS, "variant", "time_s_median", "peak_mem_bytes", "time_trusted", *FIDELITY_COLUMNS]
    columns = [*problem, "inputs_layer", "all_layers", "threshold", "met", *pick_cols, "global_time_s_median",
               "global_peak_mem_bytes", "speedup", "memory_saving", "n_configurations", "n_layers"]
    combined = over_layers(confs) if len(confs) else confs.assign(n_layers=0)
    rows = []
    for rec, g in _groups(confs, problem):
        layered = g["inputs_layer"].notna()
        scopes = [(pd.NA, False, g[~layered])] if (~layered).any() else []
        scopes += [(layer, False, lg) for layer, lg in g[layered].groupby("inputs_layer", sort=True)]
        if layered.any():
            mask = combined["inputs_layer"].isna()
            for k, v in rec.items():
                mask &= combined[k].isna() if pd.isna(v) else combined[k] == v
            scopes.append((pd.NA, True, combined[mask.fillna(False).astype(bool)]))
        n_layers = int(g.loc[layered, "inputs_layer"].nunique())
        for layer, all_layers, cands in scopes:
            cands = _with_global(cands, confs, {k: rec[k] for k in shape_keys})
            base_t, base_m = _reference(cands)
            for t in thresholds:
                row = {c: math.nan for c in pick_cols}
                row.update(variant=None, pattern=None, time_trusted=None, **dict.fromkeys(PARAM_KEYS, pd.NA))
                row.update(rec, inputs_layer=layer, all_layers=all_layers, threshold=float(t),
                           **_pick(cands, float(t), cost, error), global_time_s_median=base_t,
                           global_peak_mem_bytes=base_m, n_configurations=len(cands),
                           n_layers=n_layers if (all_layers or pd.notna(layer)) else 0)
                row["speedup"] = _ratio(base_t, row["time_s_median"])
                row["memory_saving"] = _ratio(base_m, row["peak_mem_bytes"])
                rows.append(row)
    out = pd.DataFrame(rows, columns=columns)
    for col in ("time_s_median", "peak_mem_bytes", *FIDELITY_COLUMNS, "global_time_s_median",
                "global_peak_mem_bytes", "speedup", "memory_saving", "threshold"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    out["time_trusted"] = pd.Series(list(out["time_trusted"]), index=out.index, dtype=object)
    return _int_columns(out)
