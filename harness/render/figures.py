"""The report's figures: a prepared frame (``harness.render.prepare.prepare``) in, a matplotlib
``Figure`` out (metric vs N per variant, heatmaps of speedup and memory saving over a baseline), and
the Figure as PNG bytes or an embedded ``<img>`` tag. Figures are plain ``Figure`` objects drawn with
the Agg canvas, never pyplot, so no global state changes. matplotlib and seaborn are imported inside
the functions, so importing this module (and the report modules above it) stays fast.
"""

from __future__ import annotations

import base64
import io
import math
import warnings

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from harness.analysis.trust_frame import untrusted_mask
from harness.render.prepare import METRICS, facet_layout, wrong_values


# ---- figures ----------------------------------------------------------------------------------
SERIES_DASHES = ["", (4, 1.5), (1, 1), (3, 1, 1, 1), (6, 2), (2, 2, 6, 2)]


SERIES_MARKERS = ["o", "s", "^", "D", "v", "P"]


# Values measured from a cell's time: its untrusted cells (time_trusted False) are drawn hollow.
# Peak memory does not depend on how busy the machine was, so its plot draws every cell filled.
TIME_VALUES = frozenset({"time_ms", "time_iqr_ms", "gflop_per_s", "ceiling_pct"})


UNTRUSTED_LABEL = "hollow: untrusted time (flagged)"


# A wrong cell (its output is not what its pattern defines) keeps its time: drawn as this marker in
# its variant's colour, never joined to the line, fitted or ranked.
WRONG_MARKER = "X"


WRONG_LABEL = "X: wrong output (not a measurement)"


WRONG_TEXT = "#b00000"  # a heatmap cell whose variant (or baseline) is wrong: its status in this colour


def variant_palette(variants) -> dict:
    """A stable colour per variant name (sorted), shared by every figure of a report."""
    # local, as every matplotlib/seaborn import here: keeps start-up fast
    import seaborn as sns  # lazy: start-up

    names = sorted(set(variants))
    colors = sns.color_palette("tab10" if len(names) <= 10 else "husl", max(len(names), 1))
    return dict(zip(names, colors))


def _new_figure(nrows: int, ncols: int, cell_w: float, cell_h: float, extra_w: float = 0.0,
                row_heights: list[float] | None = None, height_ratios: list[float] | None = None):
    """A grid of panels; ``row_heights`` (inches per row of panels, titles and ticks included) overrides
    the uniform ``cell_h``, and ``height_ratios`` sets how the plotting areas share the height."""
    from matplotlib.figure import Figure  # lazy: start-up

    heights = row_heights or [cell_h] * nrows
    fig = Figure(figsize=(cell_w * ncols + extra_w, sum(heights) + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={"height_ratios": height_ratios or heights})
    return fig, axes


def _empty_figure(message: str):
    from matplotlib.figure import Figure  # lazy: start-up

    fig = Figure(figsize=(6, 1.2), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def _style():
    import seaborn as sns  # lazy: start-up

    return {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.75)}


def plot_vs_n(prep: pd.DataFrame, value: str, ylabel: str, title: str, logy: bool = True):
    """Metric against sequence length per variant (colour) and series (line style and marker), log-log,
    one panel per pattern (columns) and pass/causal (rows). Lines join the ok cells. For a value
    measured from time (``TIME_VALUES``), untrusted cells (``time_trusted`` False) are drawn as hollow
    markers of the same colour; ``wrong`` cells, whose output is not what their pattern defines, as
    ``WRONG_MARKER`` in their variant's colour, off the lines; the legend names both."""
    import matplotlib  # lazy: start-up
    import matplotlib.ticker
    from matplotlib.lines import Line2D

    prep = prep.assign(_untrusted=untrusted_mask(prep) if value in TIME_VALUES else False,
                       _wrong=wrong_values(prep, value) if value in METRICS else np.nan)
    ok = prep[(prep["status"] == "ok") & np.isfinite(prep[value]) & (prep[value] > 0 if logy else True)]
    wrong = prep[np.isfinite(prep["_wrong"]) & (prep["_wrong"] > 0 if logy else True)]
    if ok.empty and wrong.empty:
        return _empty_figure(f"{title}: no ok cells to plot")
    rows, cols = facet_layout(prep)
    palette = variant_palette(prep["variant"])
    series = sorted(prep["series"].unique())
    markers, dashes = dict(zip(series, SERIES_MARKERS * 9)), dict(zip(series, SERIES_DASHES * 9))
    multi = len(series) > 1
    with matplotlib.rc_context(_style()):
        fig, axes = _new_figure(len(rows), len(cols), 3.6, 2.7, extra_w=2.2)
        ns = sorted(int(n) for n in prep["seq_len"].unique())
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                ax = axes[i][j]
                sub = ok[(ok["facet_row"] == r) & (ok["pattern_label"] == c)].sort_values("seq_len")
                bad = wrong[(wrong["facet_row"] == r) & (wrong["pattern_label"] == c)]
                for variant, pts in bad.groupby("variant", sort=True):
                    ax.plot(pts["seq_len"], pts["_wrong"], linestyle="none", marker=WRONG_MARKER, markersize=8,
                            color=palette[variant], markeredgecolor="black", markeredgewidth=0.8, zorder=4)
                if sub.empty and bad.empty:
                    ax.text(0.5, 0.5, "no ok cells", ha="center", va="center", transform=ax.transAxes, color="0.4")
                elif not sub.empty:
                    # a line through every ok cell (the mean where a variant has several at one N) per
                    # variant and series; markers drawn apart, so untrusted ones can be hollow
                    for (variant, s), pts in sub.groupby(["variant", "series"], sort=True):
                        line, dash = pts.groupby("seq_len")[value].mean(), dashes[s] if multi else ""
                        ax.plot(line.index, line.to_numpy(), color=palette[variant],
                                linestyle=(0, dash) if dash else "-")
                    for (variant, s, hollow), pts in sub.groupby(["variant", "series", "_untrusted"], sort=True):
                        color = palette[variant]
                        ax.plot(pts["seq_len"], pts[value], linestyle="none", marker=markers[s], color=color,
                                markeredgecolor=color, markerfacecolor="none" if hollow else color,
                                markeredgewidth=1.3 if hollow else 1.0, zorder=3)
                if logy and not (sub.empty and bad.empty):
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
                ax.set_xlabel("sequence length N (kv_len)" if i == len(rows) - 1 else "")
                ax.set_ylabel(ylabel if j == 0 else "")
        handles = [Line2D([], [], color=palette[v], marker="o", label=v.replace("$", r"\$"))
                   for v in sorted({*ok["variant"], *wrong["variant"]})]
        if multi:
            handles.append(Line2D([], [], linestyle="none", label=""))
            for k, s in enumerate(series):
                dash = SERIES_DASHES[k % len(SERIES_DASHES)]
                handles.append(Line2D([], [], color="0.3", marker=SERIES_MARKERS[k % len(SERIES_MARKERS)],
                                      linestyle=(0, dash) if dash else "-", label=s.replace("$", r"\$")))
        if ok["_untrusted"].any():
            handles.append(Line2D([], [], linestyle="none", label=""))
            handles.append(Line2D([], [], linestyle="none", marker="o", color="0.3", markerfacecolor="none",
                                  markeredgecolor="0.3", markeredgewidth=1.3, label=UNTRUSTED_LABEL))
        if len(wrong):
            handles.append(Line2D([], [], linestyle="none", label=""))
            handles.append(Line2D([], [], linestyle="none", marker=WRONG_MARKER, markersize=8, color="0.6",
                                  markeredgecolor="black", markeredgewidth=0.8, label=WRONG_LABEL))
        fig.legend(handles=handles, loc="outside right upper", title="variant", frameon=False)
        fig.suptitle(title)
    return fig


def _short_status(status: str) -> str:
    return {"unsupported": "unsup.", "timeout": "t/o", "not run": "-"}.get(status, status)


def plot_baseline_heatmap(rel: pd.DataFrame, value: str, baseline: str, title: str):
    """Heatmap of ``speedup`` or ``memory_saving`` (x baseline) per variant (rows) and N (columns), one
    panel per pattern and pass/causal. Colour is log2 of the ratio, blue = better than the baseline;
    cells where a variant did not run show its status, a wrong cell (or one whose baseline is wrong)
    says so in ``WRONG_TEXT`` and gets no colour. Rows that are unsupported everywhere in a panel are
    left out (the failures table lists them)."""
    import matplotlib  # lazy: start-up
    import seaborn as sns  # lazy: start-up

    if rel.empty:
        return _empty_figure(f"{title}: baseline {baseline!r} has no cells")
    rel = rel.copy()
    multi = rel["series"].nunique() > 1
    rel["row"] = rel["variant_plot"] + (" | " + rel["series"] if multi else "")
    rows, cols = facet_layout(rel)
    finite = np.log2(rel[value].dropna().to_numpy(dtype=float))
    span = max(1.0, float(np.nanmax(np.abs(finite)))) if len(finite) else 1.0
    ns_all = sorted(rel["seq_len"].unique())
    panels = {}
    for r in rows:
        for c in cols:
            sub = rel[(rel["facet_row"] == r) & (rel["pattern_label"] == c)]
            keep = sub.groupby("row")["status"].transform(lambda s: (s != "unsupported").any())
            panels[r, c] = sub[keep.astype(bool)] if len(sub) else sub
    # Each row of panels is as tall as its own row labels need, so every heatmap row is the same height
    # (0.25 in) and a panel with one row is not stretched to the height of another's ten.
    labels_in_row = [max(1, max(panels[r, c]["row"].nunique() for c in cols)) for r in rows]
    with matplotlib.rc_context(_style()):
        fig, axes = _new_figure(len(rows), len(cols), 1.2 + 0.75 * len(ns_all) + (2.0 if multi else 0.8), 0.0,
                                row_heights=[0.8 + 0.25 * k for k in labels_in_row], height_ratios=labels_in_row)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                ax = axes[i][j]
                sub = panels[r, c]
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
                    elif st.get("baseline_status") == "wrong":
                        text.loc[rw, n] = "base wrong"
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
                        wrong = text.loc[rw, n] in ("wrong", "base wrong")
                        color = WRONG_TEXT if wrong else "white" if strong else ("0.15" if pd.notna(v) else "0.5")
                        ax.text(x + 0.5, y + 0.5, text.loc[rw, n], ha="center", va="center", fontsize=9,
                                color=color, fontweight="bold" if wrong else "normal")
                if len(vals.index) < labels_in_row[i]:  # fewer rows than its neighbours: same row height
                    ax.set_ylim(labels_in_row[i], 0)
                ax.set_xlabel("N" if i == len(rows) - 1 else "")
                ax.set_ylabel("")
                ax.tick_params(axis="y", rotation=0)
        fig.suptitle(title)
    return fig


def plot_ceiling(prep: pd.DataFrame, title: str):
    """Achieved fraction of the measured matmul ceiling (%) against N, same panels as plot_vs_n."""
    return plot_vs_n(prep, "ceiling_pct", "% of matmul ceiling", title, logy=False)


def figure_png(fig, dpi: int = 90) -> bytes:
    """Render a Figure to PNG bytes with the Agg canvas (explicitly; no pyplot, no global backend), in
    a palette of 256 colours (Pillow's quantization): a plot's flat colours and their antialiased
    edges survive it, and the embedded image is about a quarter of the size of a full-colour one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    buf.seek(0)
    image = Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def figure_img(fig, alt: str, dpi: int = 90):
    """An <img> tag with the figure embedded as a base64 PNG data URI (the alt text is escaped)."""
    data = base64.b64encode(figure_png(fig, dpi)).decode("ascii")
    return Markup(f'<img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{data}">')
