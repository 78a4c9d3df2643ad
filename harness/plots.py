"""Pure report building blocks: a tidy results DataFrame in, a derived table, a matplotlib Figure or an
HTML fragment out. No printing, no files, no global state (figures are plain ``Figure`` objects drawn
with the Agg canvas, never pyplot).

Units are chosen here and only here: time in ms, memory in MiB (2**20 bytes), throughput in GFLOP/s
(10**9 FLOP/s). The stored tables stay in base units. matplotlib, seaborn and markupsafe are imported
inside the functions that use them, so importing this module is cheap and side-effect free.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import Callable

import numpy as np
import pandas as pd

MIB = 2**20
PATTERN_ORDER = ("global", "local", "hierarchical")
PASS_ORDER = ("fwd", "fwd_bwd")
STATUS_ORDER = ("ok", "unsupported", "oom", "timeout", "error")
# One line of a plot / one cell of a heatmap: which run (and device, dtype) and which shape.
GROUP_KEYS = ["series", "shape", "pattern", "pattern_label", "causal", "pass"]


# ---- derived frames ---------------------------------------------------------------------------
def _floats(series: pd.Series, scale: float = 1.0) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce")
    if hasattr(values, "to_numpy"):
        values = values.to_numpy(dtype="float64", na_value=np.nan)
    return np.asarray(values, dtype="float64") * scale


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


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of a tidy frame (one or several runs) with the columns the report needs.

    ``series``: what one line stands for: the parts of (run_id, device, dtype) that vary, joined by
    " / " (the run id alone when nothing varies). ``shape``: ``B=1 H=8 D=64``. ``pattern_label``:
    the pattern with its window or segment. Metrics in report units (``time_ms``, ``time_iqr_ms``,
    ``peak_mem_mib``, ``gflop_per_s``, ``ceiling_pct``, ``rel_error_f``) are NaN unless status is ok.
    """
    out = df.copy().reset_index(drop=True)
    for col in ("run_id", "variant", "pattern", "device", "dtype", "pass", "status", "reason"):
        out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str)
    out["causal"] = [bool(c) if pd.notna(c) else False for c in out["causal"]]
    for col in ("seq_len", "batch", "heads", "head_dim"):
        out[col] = pd.to_numeric(out[col]).astype("int64")
    ok = (out["status"] == "ok").to_numpy()
    for col, src, scale in (("time_ms", "time_s_median", 1e3), ("time_iqr_ms", "time_s_iqr", 1e3),
                            ("peak_mem_mib", "peak_mem_bytes", 1 / MIB), ("gflop_per_s", "flops_per_s", 1e-9),
                            ("ceiling_pct", "ceiling_fraction", 100.0), ("rel_error_f", "rel_error", 1.0),
                            ("ceiling_gflop_per_s", "ceiling_flops_per_s", 1e-9)):
        out[col] = np.where(ok, _floats(out[src], scale), np.nan)
    varying = [k for k in ("run_id", "device", "dtype") if out[k].nunique() > 1]
    out["series"] = (out[varying].agg(" / ".join, axis=1) if varying else out["run_id"]).astype(str) \
        if len(out) else pd.Series(dtype=str)
    out["shape"] = [f"B={b} H={h} D={d}" for b, h, d in zip(out["batch"], out["heads"], out["head_dim"])]
    labels = {p: _pattern_label(p, out[out["pattern"] == p]) for p in out["pattern"].unique()}
    out["pattern_label"] = out["pattern"].map(labels).astype(str) if len(out) else pd.Series(dtype=str)
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


def fit_exponents(prep: pd.DataFrame) -> pd.DataFrame:
    """Scaling exponent per (series, shape, variant, pattern, causal, pass): the least-squares slope of
    log(time) and of log(peak memory) against log(N) over the ok cells. Fewer than two distinct
    sequence lengths give NaN and a note, never an error."""
    keys = ["series", "shape", "variant", "pattern", "pattern_label", "causal", "pass"]
    cols = [*keys, "time_exponent", "mem_exponent", "n_min", "n_max", "n_points", "range", "note"]
    rows = []
    for key, g in prep.groupby(keys, sort=True):
        okg = g[g["status"] == "ok"]
        if okg.empty:
            continue
        rec = dict(zip(keys, key))
        notes = []
        for name, col in (("time", "time_ms"), ("mem", "peak_mem_mib")):
            pts = okg[np.isfinite(okg[col]) & (okg[col] > 0)].groupby("seq_len")[col].median()
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
        if failed:
            notes.append("not ok at N = " + ", ".join(map(str, failed)))
        rec["note"] = "; ".join(notes)
        rows.append(rec)
    return pd.DataFrame(rows, columns=cols)


def crossovers(prep: pd.DataFrame) -> pd.DataFrame:
    """Where the faster of two variants changes with N: for each pair measured at two or more common
    sequence lengths whose order flips, the winner at the largest N and the smallest N from which it
    is faster at every larger measured N."""
    cols = [*GROUP_KEYS, "faster", "slower", "from_n", "slower_at_n", "flips", "text"]
    ok = prep[(prep["status"] == "ok") & np.isfinite(prep["time_ms"])]
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
            rows.append({**dict(zip(GROUP_KEYS, key)), "faster": win, "slower": lose, "from_n": int(ns[start]),
                         "slower_at_n": int(ns[start - 1]), "flips": flips, "text": text})
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


def worst_errors(prep: pd.DataFrame) -> pd.DataFrame:
    """Worst relative error (vs the float64 reference) per series, variant and pattern, where it was
    found, and whether it was measured on a smaller twin of the timed case."""
    keys = ["series", "variant", "pattern", "pattern_label"]
    cols = [*keys, "rel_error", "causal", "pass", "seq_len", "error_on_twin", "error_seq_len", "cells", "twins"]
    ok = prep[(prep["status"] == "ok") & np.isfinite(prep["rel_error_f"])]
    rows = []
    for key, g in ok.groupby(keys, sort=True):
        worst = g.loc[g["rel_error_f"].idxmax()]
        twin = bool(worst["error_on_twin"]) if pd.notna(worst["error_on_twin"]) else False
        twins = int(sum(bool(t) for t in g["error_on_twin"] if pd.notna(t)))
        rows.append({**dict(zip(keys, key)), "rel_error": float(worst["rel_error_f"]), "causal": worst["causal"],
                     "pass": worst["pass"], "seq_len": int(worst["seq_len"]), "error_on_twin": twin,
                     "error_seq_len": int(worst["error_seq_len"]) if pd.notna(worst["error_seq_len"]) else None,
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
    if prep.empty:
        return pd.DataFrame(columns=["series", "variant", *STATUS_ORDER, "total"])
    counts = prep.groupby(["series", "variant", "status"]).size().unstack("status", fill_value=0)
    for s in STATUS_ORDER:
        if s not in counts:
            counts[s] = 0
    extra = [c for c in counts.columns if c not in STATUS_ORDER]
    counts = counts[[*STATUS_ORDER, *extra]]
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


# ---- figures ----------------------------------------------------------------------------------
SERIES_DASHES = ["", (4, 1.5), (1, 1), (3, 1, 1, 1), (6, 2), (2, 2, 6, 2)]
SERIES_MARKERS = ["o", "s", "^", "D", "v", "P"]


def variant_palette(variants) -> dict:
    """A stable colour per variant name (sorted), shared by every figure of a report."""
    import seaborn as sns

    names = sorted(set(variants))
    colors = sns.color_palette("tab10" if len(names) <= 10 else "husl", max(len(names), 1))
    return dict(zip(names, colors))


def _new_figure(nrows: int, ncols: int, cell_w: float, cell_h: float, extra_w: float = 0.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(cell_w * ncols + extra_w, cell_h * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _empty_figure(message: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 1.2), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def _style():
    import seaborn as sns

    return {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.75)}


def plot_vs_n(prep: pd.DataFrame, value: str, ylabel: str, title: str, logy: bool = True):
    """Metric against sequence length per variant (colour) and series (line style), log-log, one panel
    per pattern (columns) and pass/causal (rows). Only ok cells are drawn."""
    import matplotlib
    import matplotlib.ticker
    import seaborn as sns
    from matplotlib.lines import Line2D

    ok = prep[(prep["status"] == "ok") & np.isfinite(prep[value]) & (prep[value] > 0 if logy else True)]
    if ok.empty:
        return _empty_figure(f"{title}: no ok cells to plot")
    rows, cols = facet_layout(prep)
    palette = variant_palette(prep["variant"])
    plot_palette = {v.replace("$", r"\$"): c for v, c in palette.items()}
    series = sorted(prep["series"].unique())
    multi = len(series) > 1
    with matplotlib.rc_context(_style()):
        fig, axes = _new_figure(len(rows), len(cols), 3.6, 2.7, extra_w=2.2)
        ns = sorted(int(n) for n in prep["seq_len"].unique())
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                ax = axes[i][j]
                sub = ok[(ok["facet_row"] == r) & (ok["pattern_label"] == c)].sort_values("seq_len")
                if sub.empty:
                    ax.text(0.5, 0.5, "no ok cells", ha="center", va="center", transform=ax.transAxes, color="0.4")
                else:
                    kwargs = dict(style="series", style_order=series, markers=dict(zip(series, SERIES_MARKERS * 9)),
                                  dashes=dict(zip(series, SERIES_DASHES * 9))) if multi else dict(marker="o")
                    sns.lineplot(data=sub, x="seq_len", y=value, hue="variant_plot", palette=plot_palette,
                                 errorbar=None, legend=False, ax=ax, **kwargs)
                    if logy:
                        ax.set_yscale("log")
                        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.set_xscale("log", base=2)
                ax.set_xticks(ns, [str(n) for n in ns])
                ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
                if len(ns) == 1:
                    ax.set_xlim(ns[0] / 1.5, ns[0] * 1.5)
                ax.set_title(f"{c} | {r}")
                ax.set_xlabel("sequence length N" if i == len(rows) - 1 else "")
                ax.set_ylabel(ylabel if j == 0 else "")
        handles = [Line2D([], [], color=palette[v], marker="o", label=v.replace("$", r"\$"))
                   for v in sorted(ok["variant"].unique())]
        if multi:
            handles.append(Line2D([], [], linestyle="none", label=""))
            for k, s in enumerate(series):
                dash = SERIES_DASHES[k % len(SERIES_DASHES)]
                handles.append(Line2D([], [], color="0.3", marker=SERIES_MARKERS[k % len(SERIES_MARKERS)],
                                      linestyle=(0, dash) if dash else "-", label=s.replace("$", r"\$")))
        fig.legend(handles=handles, loc="outside right upper", title="variant", frameon=False)
        fig.suptitle(title)
    return fig


def _short_status(status: str) -> str:
    return {"unsupported": "unsup.", "timeout": "t/o", "not run": "-"}.get(status, status)


def plot_baseline_heatmap(rel: pd.DataFrame, value: str, baseline: str, title: str):
    """Heatmap of ``speedup`` or ``memory_saving`` (x baseline) per variant (rows) and N (columns), one
    panel per pattern and pass/causal. Colour is log2 of the ratio, blue = better than the baseline;
    cells where a variant did not run show its status. Rows that are unsupported everywhere in a
    panel are left out (the failures table lists them)."""
    import matplotlib
    import seaborn as sns

    if rel.empty:
        return _empty_figure(f"{title}: baseline {baseline!r} has no cells")
    rel = rel.copy()
    multi = rel["series"].nunique() > 1
    rel["row"] = rel["variant_plot"] + (" | " + rel["series"] if multi else "")
    rows, cols = facet_layout(rel)
    finite = np.log2(rel[value].dropna().to_numpy(dtype=float))
    span = max(1.0, float(np.nanmax(np.abs(finite)))) if len(finite) else 1.0
    nrow_labels = rel.groupby(["facet_row", "pattern_label"])["row"].nunique().max()
    ns_all = sorted(rel["seq_len"].unique())
    with matplotlib.rc_context(_style()):
        fig, axes = _new_figure(len(rows), len(cols), 1.2 + 0.75 * len(ns_all) + (2.0 if multi else 0.8),
                                0.8 + 0.25 * nrow_labels)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                ax = axes[i][j]
                sub = rel[(rel["facet_row"] == r) & (rel["pattern_label"] == c)]
                keep = sub.groupby("row")["status"].transform(lambda s: (s != "unsupported").any())
                sub = sub[keep.astype(bool)] if len(sub) else sub
                ax.set_title(f"{c} | {r}")
                if sub.empty:
                    ax.axis("off")
                    ax.text(0.5, 0.5, "nothing to compare", ha="center", va="center", transform=ax.transAxes,
                            color="0.4")
                    continue
                vals = sub.pivot_table(index="row", columns="seq_len", values=value, aggfunc="median", dropna=False)
                order = sorted(sub["row"].unique())
                vals = vals.reindex(index=order, columns=sorted(sub["seq_len"].unique()))
                status = sub.drop_duplicates(["row", "seq_len"]).set_index(["row", "seq_len"])
                text = pd.DataFrame("", index=vals.index, columns=vals.columns)
                for (rw, n), st in status.iterrows():
                    v = vals.loc[rw, n]
                    if pd.notna(v):
                        text.loc[rw, n] = f"{v:.2g}x" if v < 100 else f"{v:.0f}x"
                    elif st["status"] != "ok":
                        text.loc[rw, n] = _short_status(st["status"])
                    else:
                        text.loc[rw, n] = "no base"
                with warnings.catch_warnings():  # seaborn's own use of Colormap.set_bad
                    warnings.simplefilter("ignore", PendingDeprecationWarning)
                    sns.heatmap(np.log2(vals.astype(float)), ax=ax, cmap="RdBu", center=0, vmin=-span, vmax=span,
                                cbar=False, linewidths=0.5, linecolor="white", annot=False)
                for y, rw in enumerate(vals.index):
                    for x, n in enumerate(vals.columns):
                        v = vals.loc[rw, n]
                        strong = pd.notna(v) and abs(math.log2(v)) > 0.6 * span
                        ax.text(x + 0.5, y + 0.5, text.loc[rw, n], ha="center", va="center", fontsize=8,
                                color="white" if strong else ("0.15" if pd.notna(v) else "0.5"))
                ax.set_xlabel("N" if i == len(rows) - 1 else "")
                ax.set_ylabel("")
                ax.tick_params(axis="y", rotation=0)
        fig.suptitle(title)
    return fig


def plot_ceiling(prep: pd.DataFrame, title: str):
    """Achieved fraction of the measured matmul ceiling (%) against N, same panels as plot_vs_n."""
    return plot_vs_n(prep, "ceiling_pct", "% of matmul ceiling", title, logy=False)


def figure_png(fig, dpi: int = 90) -> bytes:
    """Render a Figure to PNG bytes with the Agg canvas (explicitly; no pyplot, no global backend)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def figure_img(fig, alt: str, dpi: int = 90):
    """An <img> tag with the figure embedded as a base64 PNG data URI (the alt text is escaped)."""
    import base64

    from markupsafe import Markup, escape

    data = base64.b64encode(figure_png(fig, dpi)).decode("ascii")
    return Markup(f'<img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{data}">')


# ---- HTML tables ------------------------------------------------------------------------------
def fmt_num(v) -> str:
    """Three significant figures without exponent for ordinary magnitudes; blank for missing."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)) or v is pd.NA:
        return ""
    v = float(v)
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 0.01:
        return f"{v:.3g}"
    return f"{v:.2e}"


def fmt_sci(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{float(v):.2e}"


def fmt_exp(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{float(v):.2f}"


def fmt_bool(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return "yes" if bool(v) else "no"


def fmt_text(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


@dataclass(frozen=True)
class Col:
    """One table column: source key, header text, cell formatter, and whether it sorts numerically."""

    key: str
    header: str
    fmt: Callable[[object], str] = fmt_text
    numeric: bool = False


def html_table(df: pd.DataFrame, cols: list[Col], caption: str | None = None, table_id: str | None = None):
    """An HTML <table class="sortable"> fragment; every header and cell is escaped text. Numeric
    cells carry their unformatted value in ``data-v`` for the page's sort script."""
    from markupsafe import Markup, escape

    id_attr = f' id="{escape(table_id)}"' if table_id else ""
    parts = [f'<table class="sortable"{id_attr}>']
    if caption:
        parts.append(f"<caption>{escape(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(
        f'<th{" class=num" if c.numeric else ""} title="click to sort">{escape(c.header)}</th>' for c in cols)
        + "</tr></thead><tbody>")
    for rec in df.to_dict("records"):
        cells = []
        for c in cols:
            v = rec.get(c.key)
            text = escape(c.fmt(v))
            if c.numeric:
                try:
                    raw = float(v) if v is not None and v is not pd.NA and not (isinstance(v, float) and
                                                                               math.isnan(v)) else ""
                except (TypeError, ValueError):
                    raw = ""
                cells.append(f'<td class="num" data-v="{raw}">{text}</td>')
            else:
                cells.append(f"<td>{text}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    if df.empty:
        parts.append(f'<tr><td colspan="{len(cols)}" class="empty">none</td></tr>')
    parts.append("</tbody></table>")
    return Markup("".join(parts))


def key_value_table(rows: list[tuple[str, list[object]]], headers: list[str]):
    """A comparison table: one row per key, one column per run; rows whose values differ are marked."""
    from markupsafe import Markup, escape

    parts = ['<table class="kv"><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr></thead><tbody>"]
    for key, values in rows:
        texts = [_compact(v) for v in values]
        differ = len(set(texts)) > 1
        parts.append(f'<tr{" class=differs" if differ else ""}><th>{escape(key)}</th>'
                     + "".join(f"<td>{escape(t)}</td>" for t in texts) + "</tr>")
    parts.append("</tbody></table>")
    return Markup("".join(parts))


def _compact(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_compact(x)}" for k, x in v.items()) or "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(_compact(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return fmt_text(v)
