"""A tidy results frame made ready to draw: ``prepare`` adds the columns every report table and figure
reads (series, shape and pattern labels, metrics in report units from ``harness.render.units``, NaN
unless the cell ran ok, and each row's trust as True, False or None with its flags as a list),
``wrong_values`` reads the metrics a ``wrong`` cell kept, and ``facet_layout`` orders the panels.
Pure: no printing, no files, no figures.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from harness.analysis.trust_frame import parse_flags, trusted_value
from harness.render.units import to_giga, to_mib, to_ms, to_pct
from harness.store.schema import floats

PATTERN_ORDER = ("global", "local", "sink", "dilated", "bigbird", "hierarchical")


PASS_ORDER = ("fwd", "fwd_bwd")


# One line of a plot / one cell of a heatmap: which run (and device, dtype) and which shape.
GROUP_KEYS = ["series", "shape", "pattern", "pattern_label", "causal", "pass"]


# Report-unit metric columns: (base-unit column they are read from, unit conversion).
METRICS = {"time_ms": ("time_s_median", to_ms), "time_iqr_ms": ("time_s_iqr", to_ms),
           "peak_mem_mib": ("peak_mem_bytes", to_mib), "gflop_per_s": ("flops_per_s", to_giga),
           "ceiling_pct": ("ceiling_fraction", to_pct), "rel_error_f": ("rel_error", None),
           "ceiling_gflop_per_s": ("ceiling_flops_per_s", to_giga)}


def _ints_or(df: pd.DataFrame, col: str, default: pd.Series) -> list[int]:
    """An integer column, with ``default`` where it is missing (runs before schema 3 have no such column)."""
    if col not in df.columns:
        return [int(x) for x in default]
    return [int(v) if pd.notna(v) else int(d) for v, d in zip(df[col], default)]


# The parameters in a pattern's label, with their letters: ``sink (w=128, s=4)``.
LABEL_PARAMS = {"local": (("window", "w"),), "sink": (("window", "w"), ("sinks", "s")),
                "dilated": (("window", "w"), ("stride", "d")), "bigbird": (("window", "w"), ("globals", "g")),
                "topk": (("topk", "k"),)}


def _pattern_labels(pattern: str, rows: pd.DataFrame) -> list[str]:
    """The label of each of ``rows`` (all of one pattern): ``local (w=64)``, ``sink (w=128, s=4)``, one
    label per value of the pattern's parameters (a swept window is one facet per window);
    ``hierarchical (s=\u221aN)`` (s = round(sqrt(N))) when every segment is the sqrt of its N, else
    ``hierarchical (s=32)``."""
    if pattern in LABEL_PARAMS:
        params = LABEL_PARAMS[pattern]
        columns = [rows[col] if col in rows.columns else [None] * len(rows) for col, _ in params]
        return [f"{pattern} ({', '.join(f'{letter}={int(v)}' for (_, letter), v in zip(params, values))})"
                if all(pd.notna(v) for v in values) else pattern for values in zip(*columns)]
    if pattern == "hierarchical":
        segments = [int(s) if pd.notna(s) else None for s in rows["segment"]]
        pairs = {(int(n), s) for n, s in zip(rows["seq_len"], segments) if s is not None}
        if len({s for _, s in pairs}) > 1 and all(s == max(1, round(math.sqrt(n))) for n, s in pairs):
            return ["hierarchical (s=\u221aN)" if s is not None else pattern for s in segments]
        return [f"hierarchical (s={s})" if s is not None else pattern for s in segments]
    return [pattern] * len(rows)


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of a tidy frame (one or several runs) with the columns the report needs.

    ``series``: what one line stands for: the parts of (run_id, device, device_name, dtype) that vary, joined by
    " / " (the run id alone when nothing varies). ``shape``: ``B=1 H=8 D=64``. ``pattern_label``:
    the pattern with its parameters (``LABEL_PARAMS``; hierarchical's segment). Metrics in report units (``time_ms``, ``time_iqr_ms``,
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
    out["time_trusted"] = pd.Series([trusted_value(t) if r else None for t, r in zip(trusted, ran)],
                                    index=out.index, dtype=object)
    raw_flags = out["time_flags"] if "time_flags" in out.columns else [None] * len(out)
    out["flags"] = pd.Series([parse_flags(f) if r else [] for f, r in zip(raw_flags, ran)], index=out.index,
                             dtype=object)
    out["flags_text"] = ["; ".join(f) for f in out["flags"]]
    for col in ("seq_len", "batch", "heads", "head_dim"):
        out[col] = pd.to_numeric(out[col]).astype("int64")
    ok = (out["status"] == "ok").to_numpy()
    for col, (src, unit) in METRICS.items():
        values = floats(out[src])
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
    labels = pd.Series("", index=out.index, dtype=object)
    for p in out["pattern"].unique():
        rows = out[out["pattern"] == p]
        labels[rows.index] = _pattern_labels(p, rows)
    out["pattern_label"] = labels.astype(str) if len(out) else pd.Series(dtype=str)
    if "doc_lens" in out.columns:  # documents per sequence is a facet: one column per count
        docs = [len(json.loads(v)) if isinstance(v, str) and v else None for v in out["doc_lens"]]
        out["pattern_label"] = [f"document ({k} docs)" if p == "document" and k else lab
                                for p, k, lab in zip(out["pattern"], docs, out["pattern_label"])]
    out["facet_row"] = [f"{p} causal" if c else p for p, c in zip(out["pass"], out["causal"])]
    # matplotlib reads "$...$" as math; plot labels must show variant names literally.
    out["variant_plot"] = out["variant"].str.replace("$", r"\$", regex=False)
    return out


def pattern_rank(label: str) -> int:
    kind = label.split(" ")[0]
    return PATTERN_ORDER.index(kind) if kind in PATTERN_ORDER else len(PATTERN_ORDER)


def facet_layout(prep: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Rows (pass, then causal) and columns (pattern) of every faceted figure, in reading order."""
    rows = sorted(prep["facet_row"].unique(), key=lambda r: (
        PASS_ORDER.index(r.split(" ")[0]) if r.split(" ")[0] in PASS_ORDER else 9, r))
    cols = sorted(prep["pattern_label"].unique(), key=lambda c: (pattern_rank(c), c))
    return rows, cols


def wrong_values(prep: pd.DataFrame, col: str) -> np.ndarray:
    """A metric of ``METRICS`` in report units for the ``wrong`` cells (their row keeps its time and
    memory), NaN elsewhere: what a figure draws as wrong, never as a measurement."""
    src, unit = METRICS[col]
    if src not in prep.columns:
        return np.full(len(prep), np.nan)
    values = floats(prep[src])
    return np.where((prep["status"] == "wrong").to_numpy(), unit(values) if unit else values, np.nan)
