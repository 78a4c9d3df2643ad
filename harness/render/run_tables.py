"""The report's tables about the runs themselves: general facts, provenance, the resolved sweep,
calibration entries and the ceilings measured (one column per run)."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from harness.bench.heap import describe
from harness.core.names import BANDWIDTH_KEY
from harness.render.tables import Col, html_table, key_value_table
from harness.render.units import (
    fmt_duration,
    fmt_num,
    to_giga,
    to_ms,
    to_pct,
)


# ---- context ----------------------------------------------------------------------------------
def _utc(ts) -> str:
    if not isinstance(ts, (int, float)):
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(meta: dict) -> str:
    a, b = meta.get("started_at"), meta.get("finished_at")
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return ""
    return fmt_duration(b - a)


def runs_tables(runs: list[tuple]) -> dict:
    """Environment, sweep, calibration and ceiling tables of the runs, side by side."""
    ids = [str(m.get("run_id") or p.name) for _, m, p in runs]
    headers = ["", *ids]
    general = [("run folder", [str(p.resolve()) for _, _, p in runs]),
               ("status", [m.get("status") for _, m, _ in runs]),
               ("started", [_utc(m.get("started_at")) for _, m, _ in runs]),
               ("finished", [_utc(m.get("finished_at")) for _, m, _ in runs]),
               ("duration", [_duration(m) for _, m, _ in runs]),
               ("allocator", [describe(m.get("allocator")) for _, m, _ in runs]),
               ("cells", [", ".join(f"{k} {v}" for k, v in df["status"].value_counts().items()) or "none"
                          for df, _, _ in runs])]
    prov_keys: list[str] = []
    for _, m, _ in runs:
        prov_keys += [k for k in (m.get("provenance") or {}) if k not in prov_keys]
    provenance = [(k, [(m.get("provenance") or {}).get(k) for _, m, _ in runs]) for k in prov_keys]
    sweep_keys: list[str] = []
    for _, m, _ in runs:
        sweep_keys += [k for k in (m.get("sweep") or {}) if k not in sweep_keys]
    sweep = [(k, [(m.get("sweep") or {}).get(k) for _, m, _ in runs]) for k in sweep_keys]
    cal_rows, ceil_rows = [], []
    for run_id, (_, m, _) in zip(ids, runs):
        cal = [c for c in (m.get("calibration") or []) if isinstance(c, dict)]
        start = next((c.get("time_s_median") for c in cal if c.get("time_s_median")), None)
        for c in cal:
            med, iqr = c.get("time_s_median"), c.get("time_s_iqr")
            cal_rows.append({"run": run_id, "when": c.get("when"), "kernel": c.get("kernel"),
                             "median_ms": to_ms(med) if isinstance(med, (int, float)) else None,
                             "iqr_ms": to_ms(iqr) if isinstance(iqr, (int, float)) else None,
                             "vs_first_pct": to_pct(med / start - 1) if med and start else None,
                             "at": _utc(c.get("at")), "error": c.get("error", "")})
        for key, value in (m.get("ceilings_flops_per_s") or {}).items():
            what = "copy bandwidth (GB/s)" if key == BANDWIDTH_KEY else f"matmul {key} (GFLOP/s)"
            ceil_rows.append({"run": run_id, "device": (m.get("provenance") or {}).get("device"),
                              "ceiling": what, "value": to_giga(value) if value else None})
    return {
        "general": key_value_table(general, headers),
        "provenance": key_value_table(provenance, headers),
        "sweep": key_value_table(sweep, headers),
        "calibration": html_table(pd.DataFrame(cal_rows, columns=[
            "run", "when", "kernel", "median_ms", "iqr_ms", "vs_first_pct", "at", "error"]), [
            Col("run", "run"), Col("when", "when"), Col("kernel", "kernel"),
            Col("median_ms", "median (ms)", fmt_num, True), Col("iqr_ms", "IQR (ms)", fmt_num, True),
            Col("vs_first_pct", "vs first (%)", fmt_num, True), Col("at", "at"), Col("error", "error")]),
        "ceilings": html_table(pd.DataFrame(ceil_rows, columns=["run", "device", "ceiling", "value"]), [
            Col("run", "run"), Col("device", "device"), Col("ceiling", "ceiling"),
            Col("value", "measured", fmt_num, True)]),
    }
