"""The machine during a run: one figure per run, x = seconds since the run started.

Top panel: the calibration kernel timed beside each ok cell (``calibration_s``), the run-level
calibrations of run.json (``calibration``: start, end, resume, per node) as larger markers, and a
dashed line at ``SLOW_CALIBRATION`` x the run's best calibration (above it a cell is flagged "slow
machine"). Bottom panel: ``host_busy`` of each ok cell (the fraction of the cores other processes
used while it was timed) with a dashed line at ``HOST_BUSY``. Cells whose time is flagged
(``time_trusted`` False) are drawn hollow. The matmul and bandwidth ceilings measured during the run
(run.json ``ceilings_measured``) are written in the title. Runs written before the per-cell evidence
get a one-line figure saying so. Pure: a run's rows and run.json in, a matplotlib ``Figure`` out.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.analysis.trust import HOST_BUSY, SLOW_CALIBRATION, best_calibration
from harness.core.names import BANDWIDTH_KEY
from harness.render.figures import _empty_figure, _new_figure, _style
from harness.render.units import fmt_num, to_giga, to_ms
from harness.store.schema import floats

NO_EVIDENCE = "no per-cell evidence in this run (written before trust flags)"
CELL_COLOR = "#1f77b4"
RUN_CAL_COLOR = "#d62728"


def _column(df: pd.DataFrame, col: str) -> np.ndarray:
    """A column as floats (``floats``), all NaN where the frame has none."""
    return floats(df[col]) if col in df.columns else np.full(len(df), np.nan)


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def ceilings_text(meta: dict) -> list[str]:
    """One line per ceiling measured during the run (run.json ``ceilings_measured``), in measurement
    order: "matmul float32 ceiling at start 200 GFLOP/s, at end 190 GFLOP/s"; bandwidth in GB/s."""
    entries = [e for e in meta.get("ceilings_measured") or [] if isinstance(e, dict)]
    keys: list[str] = []
    for e in entries:
        keys += [k for k in e if k not in ("when", "at", "node", "node_id", "hostname") and k not in keys]
    keys.sort(key=lambda k: k == BANDWIDTH_KEY)  # matmul ceilings first, bandwidth last
    lines = []
    for key in keys:
        parts = [f"at {e.get('when') or '?'} {fmt_num(to_giga(v))}" for e in entries
                 if (v := _num(e.get(key))) is not None and v > 0]
        if not parts:
            continue
        what, unit = ("copy bandwidth", "GB/s") if key == BANDWIDTH_KEY else (f"matmul {key} ceiling", "GFLOP/s")
        lines.append(f"{what} {', '.join(parts)} {unit}")
    return lines


def plot_timeline(df: pd.DataFrame, meta: dict):
    """Calibration and host load of each ok cell over the run, with the run's calibrations and ceilings.

    ``df``: one run's tidy rows (as loaded; ``calibration_s``, ``host_busy``, ``finished_at``,
    ``time_trusted`` read where present); ``meta``: its run.json."""
    import matplotlib  # lazy: start-up
    from matplotlib.lines import Line2D

    run_id = str(meta.get("run_id") or "")
    title = f"Machine during run {run_id}" if run_id else "Machine during the run"
    ok = df[df["status"] == "ok"] if "status" in df.columns else df.iloc[0:0]
    cal = _column(ok, "calibration_s")
    busy = _column(ok, "host_busy")
    if not (np.isfinite(cal).any() or np.isfinite(busy).any()):
        return _empty_figure(f"{title}:\n{NO_EVIDENCE}")
    finished = _column(ok, "finished_at")
    run_cals = [(t, m, str(c.get("when") or "")) for c in meta.get("calibration") or [] if isinstance(c, dict)
                if (t := _num(c.get("at"))) is not None and (m := _num(c.get("time_s_median"))) and m > 0]
    start = _num(meta.get("started_at"))
    if start is None:  # a run.json without its start: the earliest time it records
        known = [*finished[np.isfinite(finished)].tolist(), *(t for t, _, _ in run_cals)]
        start = min(known) if known else None
    if start is None or not np.isfinite(finished).any():
        return _empty_figure(f"{title}:\nno cell records when it finished")
    x = finished - start
    trusted = ok["time_trusted"] if "time_trusted" in ok.columns else pd.Series(pd.NA, index=ok.index)
    hollow = ~pd.array(trusted.tolist(), dtype="boolean").fillna(True).to_numpy(dtype=bool)
    best = best_calibration(meta, ok.to_dict("records"))
    subtitle = ceilings_text(meta)

    def points(ax, y, label):
        for flagged in (False, True):
            sel = np.isfinite(x) & np.isfinite(y) & (hollow == flagged)
            if sel.any():
                ax.plot(x[sel], y[sel], linestyle="none", marker="o", markersize=4.5, color=CELL_COLOR,
                        markeredgecolor=CELL_COLOR, markerfacecolor="none" if flagged else CELL_COLOR,
                        markeredgewidth=1.2 if flagged else 0.8, zorder=3, label=label)

    with matplotlib.rc_context(_style()):
        fig, axes = _new_figure(2, 1, 9.0, 2.4, extra_w=2.6)
        top, bottom = axes[0][0], axes[1][0]
        bottom.sharex(top)
        points(top, to_ms(cal), "cell")
        if run_cals:
            top.plot([t - start for t, _, _ in run_cals], [to_ms(m) for _, m, _ in run_cals], linestyle="none",
                     marker="D", markersize=9, color=RUN_CAL_COLOR, markeredgecolor="white", zorder=4)
            for t, m, when in run_cals:
                top.annotate(when, (t - start, to_ms(m)), textcoords="offset points", xytext=(0, 8),
                             ha="center", fontsize=7, color=RUN_CAL_COLOR)
        if best:
            top.axhline(to_ms(SLOW_CALIBRATION * best), color="0.35", linestyle="--", linewidth=1)
        top.set_ylabel("calibration (ms)")
        top.set_title("calibration kernel timed beside each cell")
        top.tick_params(labelbottom=False)
        points(bottom, busy, "cell")
        bottom.axhline(HOST_BUSY, color="0.35", linestyle="--", linewidth=1)
        top_busy = np.nanmax(busy) if np.isfinite(busy).any() else 0.0
        bottom.set_ylim(0, max(HOST_BUSY * 1.6, min(1.05, top_busy * 1.15 + 0.02)))
        bottom.set_ylabel("host busy\n(fraction of cores)")
        bottom.set_title("other processes' CPU use while each cell was timed")
        bottom.set_xlabel("time since the run started (s)")
        bottom.set_xlim(left=min(0.0, float(np.nanmin(x))) - 1)
        handles = [Line2D([], [], linestyle="none", marker="o", color=CELL_COLOR, label="ok cell")]
        if hollow.any():
            handles.append(Line2D([], [], linestyle="none", marker="o", color=CELL_COLOR, markerfacecolor="none",
                                  markeredgewidth=1.2, label="hollow: flagged cell"))
        if run_cals:
            handles.append(Line2D([], [], linestyle="none", marker="D", markersize=8, color=RUN_CAL_COLOR,
                                  label="run calibration"))
        if best:
            handles.append(Line2D([], [], color="0.35", linestyle="--",
                                  label=f"top: {SLOW_CALIBRATION:g} x best calibration\n(above: slow machine)"))
        handles.append(Line2D([], [], color="0.35", linestyle="--",
                              label=f"bottom: {HOST_BUSY:g} of the cores\n(above: busy host)"))
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        fig.suptitle("\n".join([title, *subtitle]))
    return fig
