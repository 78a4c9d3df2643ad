"""The roofline: achieved FLOP/s against arithmetic intensity (FLOPs / minimum bytes moved), one panel
per device and dtype, under the roof min(matmul ceiling, bandwidth ceiling x intensity) measured at
the start of the run. A decode kernel (low intensity) is judged by bandwidth, a prefill kernel by
compute. Pure: a tidy frame in, a matplotlib Figure out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.render.figures import WRONG_MARKER, _empty_figure, _new_figure, _style, variant_palette

PASS_MARKERS = {"fwd": "o", "fwd_bwd": "s"}


def roofline_points(df: pd.DataFrame, status: str = "ok") -> pd.DataFrame:
    """Rows of ``status`` (ok; or wrong, which keep their time) that carry FLOPs, bytes and a time:
    their intensity and achieved FLOP/s, and the roofs."""
    need = ["flops", "bytes", "time_s_median"]
    if df.empty or any(c not in df.columns for c in need):
        return pd.DataFrame(columns=["device", "dtype", "variant", "pass", "intensity", "flops_per_s"])
    ok = df[(df["status"] == status) & df[need].notna().all(axis=1)].copy()
    ok = ok[(ok["bytes"].astype(float) > 0) & (ok["time_s_median"].astype(float) > 0)]
    ok["intensity"] = ok["flops"].astype(float) / ok["bytes"].astype(float)
    ok["flops_per_s"] = ok["flops"].astype(float) / ok["time_s_median"].astype(float)
    for col in ("ceiling_flops_per_s", "bandwidth_bytes_per_s"):
        ok[col] = ok[col].astype(float) if col in ok.columns else np.nan
    return ok


def plot_roofline(df: pd.DataFrame, title: str = "Roofline"):
    """One log-log panel per (device, dtype): points per variant (colour) and pass (marker), the roofs;
    ``wrong`` cells as ``WRONG_MARKER``, labelled as wrong output."""
    import seaborn as sns  # lazy: start-up

    pts, wrong = roofline_points(df), roofline_points(df, "wrong")
    if pts.empty:
        return _empty_figure(f"{title}: no ok cell with FLOPs, bytes and a time")
    panels = sorted(pts.groupby(["device", "dtype"]).groups)
    palette = variant_palette([*pts["variant"], *wrong["variant"]])
    with sns.axes_style(_style()):
        fig, axes = _new_figure(1, len(panels), 5.0, 3.8, extra_w=1.6)
        for ax, (device, dtype) in zip(axes[0], panels):
            sub = pts[(pts["device"] == device) & (pts["dtype"] == dtype)]
            for (variant, pass_), grp in sub.groupby(["variant", "pass"]):
                ax.scatter(grp["intensity"], grp["flops_per_s"], color=palette[variant],
                           marker=PASS_MARKERS.get(pass_, "o"), s=22, label=f"{variant} {pass_}", zorder=3)
            bad = wrong[(wrong["device"] == device) & (wrong["dtype"] == dtype)]
            for variant, grp in bad.groupby("variant"):
                ax.scatter(grp["intensity"], grp["flops_per_s"], color=palette[variant], marker=WRONG_MARKER, s=60,
                           edgecolors="black", linewidths=0.8, label=f"{variant}: wrong output", zorder=4)
            peak, bw = sub["ceiling_flops_per_s"].median(), sub["bandwidth_bytes_per_s"].median()
            lo, hi = sub["intensity"].min() / 4, sub["intensity"].max() * 4
            if np.isfinite(bw) and np.isfinite(peak):
                x = np.geomspace(lo, max(hi, peak / bw * 4), 200)
                ax.plot(x, np.minimum(peak, bw * x), color="black", lw=1.2, label="roof")
                ax.axvline(peak / bw, color="grey", ls=":", lw=0.8)
            elif np.isfinite(peak):
                ax.axhline(peak, color="black", lw=1.2, label="matmul ceiling")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("arithmetic intensity (FLOP / byte)")
            ax.set_ylabel("achieved FLOP/s")
            ax.set_title(f"{device} {dtype}")
        handles, labels = axes[0][-1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=7)
        fig.suptitle(title)
    return fig
