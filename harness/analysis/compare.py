"""Two runs compared case by case: new/base ratios with confidence intervals and a verdict per case.

Data and display are separate (as in torch.utils.benchmark's ``Compare``): ``compare_runs`` is a pure
function from two loaded runs to a tidy DataFrame (seconds, bytes, ratios); ``harness.render.compare``
turns that frame into text, Markdown, an HTML fragment or JSON and chooses units only there.

Statistics. For a case measured in both runs, the point estimate is the ratio of median per-call
times, new / base. Its confidence interval is a percentile bootstrap of the ratio of medians: each
run's raw samples are resampled with replacement, independently, with a seed fixed per case id, so the
same inputs always give the same interval. Time ratios are then normalized by the machine: each run's
calibration figure is the median of its calibration entries' ``time_s_median`` (a fixed matmul timed at
the start and end of the run), and the normalized ratio is the raw ratio divided by
new calibration / base calibration, so a uniformly slower machine is not a regression. Both ratios
are reported. A case is ``slower`` only when the lower bound of the normalized interval is above the
threshold, ``faster`` only when its upper bound is below 1 / threshold, else ``same``.

Correctness comes before time: a case ok in BASE whose NEW row is ``wrong`` (its output is not what
its pattern defines), or whose NEW relative error is non-finite, missing where BASE's was measured,
or above the dtype's tolerance where BASE's was within it, is ``wrong`` whatever its time, and fails
the comparison as ``broken`` and ``slower`` do (``output_problem``).

The bootstrap holds only within-run noise. Machine drift during a run is not in it, so the normalized
interval is widened by each run's calibration spread (max / min of its calibration medians): a case
measured at any point of a run that drifted by 30% can be off by that much, and a verdict then needs
a slowdown larger than drift and threshold together. Between-process variance is still not covered:
that is what the threshold is for, and why ``attnbench ci`` measures several fresh processes per side.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_THRESHOLD,
    N_BOOTSTRAP,
    RatioCI,
    case_seed,
    check_threshold,
    median_ratio_ci,
    time_verdict,
)
from harness.analysis.trust import used_samples
from harness.core.errors import InputError
from harness.core.tolerances import TOLERANCES
from harness.store.load import load_run

# Verdicts. slower, broken and wrong fail the comparison (exit 1); the others do not.
VERDICTS = ("wrong", "slower", "broken", "accepted", "untrusted", "faster", "same", "fixed", "not run", "new",
            "missing")


FAILING = ("wrong", "slower", "broken")


VERDICT_HELP = {
    "wrong": "ok in BASE and wrong in NEW (an output that is not what its pattern defines: non-finite, another "
             "shape or dtype, an error above the dtype's tolerance), or NEW's error is non-finite, or missing "
             "where BASE's was measured, whatever the time",
    "slower": "normalized time ratio's confidence interval lies above the threshold",
    "broken": "ok in BASE, another failure in NEW, with its status and reason: oom, timeout, error, unsupported",
    "untrusted": "a side's time is flagged, time_trusted false (noisy, host busy, slow machine...): no time verdict",
    "accepted": "slower, but accepted by an [accept-regression: ...] commit marker (attnbench ci only)",
    "faster": "normalized time ratio's confidence interval lies below 1 / threshold",
    "same": "no confident change beyond the threshold",
    "fixed": "not ok in BASE (wrong included), ok in NEW",
    "not run": "in both runs, ok in neither",
    "new": "only in NEW",
    "missing": "only in BASE",
}


COLUMNS = ["case_id", "verdict", "base_status", "new_status", "reason", "base_time_s_median", "new_time_s_median",
           "base_n_samples", "new_n_samples", "time_ratio_raw", "time_ratio_raw_lo", "time_ratio_raw_hi",
           "calibration_ratio", "time_ratio", "time_ratio_lo", "time_ratio_hi", "base_peak_mem_bytes",
           "new_peak_mem_bytes", "mem_ratio", "mem_verdict", "base_rel_error", "new_rel_error", "error_verdict",
           "base_fidelity", "new_fidelity", "fidelity_verdict"]
MEM_TOLERANCE = (1.05, 2**16)  # more memory: above 5% and above 64 KiB (allocator events are exact; small cases count too)
ERROR_FACTOR = 10.0  # less accurate: above the dtype's tolerance, or 10x the base's (and above 1% of it)
FIDELITY_TOLERANCE = (1.01, 1e-9)  # an approximate pattern gives up more: its fidelity error above 1% more (and
# 1e-9 absolute) than BASE's. Fidelity is computed in float64 on seeded or captured inputs: its noise is rounding.
FIDELITY_KEYS = ("fidelity_out_rel_error", "fidelity_ppl")  # judged, in this order


def calibration_s(meta: dict) -> float | None:
    """A run's machine-speed figure: the median of its calibration entries' time_s_median (None if none)."""
    values = [c.get("time_s_median") for c in meta.get("calibration") or [] if isinstance(c, dict)]
    values = [float(v) for v in values if isinstance(v, (int, float)) and v > 0 and math.isfinite(v)]
    return float(np.median(values)) if values else None


def node_calibration_s(meta: dict, node) -> float | None:
    """The machine-speed figure of the node that measured a row: its own calibration in run.json's
    ``nodes`` (a run spread over several nodes by the Ray executor), else the run's."""
    entry = (meta.get("nodes") or {}).get(node) if isinstance(node, str) else None
    return (calibration_s(entry) if isinstance(entry, dict) else None) or calibration_s(meta)


def calibration_spread(meta: dict) -> float | None:
    """max / min of a run's calibration medians (start, end, resume): how much machine speed moved."""
    values = [c.get("time_s_median") for c in meta.get("calibration") or [] if isinstance(c, dict)]
    values = [float(v) for v in values if isinstance(v, (int, float)) and v > 0 and math.isfinite(v)]
    return max(values) / min(values) if len(values) >= 2 else None


# ---- comparison -------------------------------------------------------------------------------
def _samples(row) -> list[float]:
    """Raw per-call samples of an ok row (those its statistics are of: not contended); the median alone
    when the samples were not kept."""
    values = [s for s in used_samples(row) if s > 0]
    if values:
        return values
    median = row.get("time_s_median")
    return [float(median)] if median is not None and not pd.isna(median) and float(median) > 0 else []


def _num(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _median_s(row) -> float | None:
    """A row's median time, kept by a ``wrong`` row too (None when it has none)."""
    value = _num(row.get("time_s_median"))
    return value if value is not None and math.isfinite(value) and value > 0 else None


def status_verdict(base_status: str, new_status: str) -> str:
    """The verdict of a case not ok on both sides: ``wrong`` (ok -> wrong), ``broken`` (ok -> not ok),
    ``fixed`` (not ok -> ok, wrong -> ok included) or ``not run`` (ok in neither)."""
    if base_status == "ok":
        return "wrong" if new_status == "wrong" else "broken"
    return "fixed" if new_status == "ok" else "not run"


def output_problem(base_error, new_error, dtype) -> str | None:
    """Why NEW's output counts as wrong from its relative error alone, or None: the error is non-finite,
    missing where BASE's was measured (a non-finite or misshapen output has no error), or above the
    dtype's forward tolerance where BASE's was within it."""
    base, new = _num(base_error), _num(new_error)
    name = str(dtype) if str(dtype) in TOLERANCES else "float32"
    tol = TOLERANCES[name][0]
    if new is None:
        return None if base is None else (f"NEW's relative error is missing where BASE's was measured ({base:.1e}): "
                                          "its output could not be checked (non-finite values?)")
    if not math.isfinite(new):
        return f"NEW's relative error is {new} against the float64 reference"
    if new > tol and (base is None or base <= tol):
        return f"NEW's relative error {new:.2e} is above {name}'s tolerance {tol:g}" + (
            f" (BASE's {base:.1e})" if base is not None else "")
    return None


def _by_case(df: pd.DataFrame, side: str) -> dict[str, dict]:
    if "case_id" not in df.columns or "status" not in df.columns:
        raise InputError(f"the {side} run has no case_id/status columns; hint: pass a folder made by "
                         "`attnbench sweep`")
    rows = {}
    for rec in df.to_dict("records"):
        rows[str(rec["case_id"])] = rec  # a case journaled twice: the last row wins, as in the journal
    return rows


def compare_runs(base_df: pd.DataFrame, base_meta: dict, new_df: pd.DataFrame, new_meta: dict,
                 threshold: float = DEFAULT_THRESHOLD, confidence: float = DEFAULT_CONFIDENCE,
                 n_boot: int = N_BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """One row per case_id in either run, with ratios, intervals and a verdict (see ``VERDICTS``).

    Pure: reads the frames and metadata, touches nothing else. Times in seconds, memory in bytes.
    """
    check_threshold(threshold)
    base, new = _by_case(base_df, "BASE"), _by_case(new_df, "NEW")
    cal_b, cal_n = calibration_s(base_meta), calibration_s(new_meta)
    cal_ratio = cal_n / cal_b if cal_b and cal_n else None
    drift = (calibration_spread(base_meta) or 1.0) * (calibration_spread(new_meta) or 1.0)
    out = []
    for case_id in [*base, *(c for c in new if c not in base)]:
        b, n = base.get(case_id), new.get(case_id)
        rec = {c: None for c in COLUMNS}
        rec.update(case_id=case_id, base_status=b and b["status"], new_status=n and n["status"], reason="")
        if b is None or n is None:
            rec["verdict"] = "new" if b is None else "missing"
            out.append(rec)
            continue
        b_ok, n_ok = b["status"] == "ok", n["status"] == "ok"
        if not (b_ok and n_ok):
            rec["verdict"] = status_verdict(b["status"], n["status"])
            rec["reason"] = str((n if b_ok or not n_ok else b).get("reason") or "")
            if "wrong" in (b["status"], n["status"]):  # a wrong row kept its time: shown, never judged
                rec.update(base_time_s_median=_median_s(b), new_time_s_median=_median_s(n),
                           base_rel_error=_num(b.get("rel_error")), new_rel_error=_num(n.get("rel_error")))
            out.append(rec)
            continue
        bs, ns = _samples(b), _samples(n)
        if not bs or not ns:
            rec.update(verdict="broken" if not ns else "fixed", reason="status ok but no time recorded")
            out.append(rec)
            continue
        raw = median_ratio_ci(bs, ns, confidence, n_boot, case_seed(case_id, seed))
        own_b, own_n = _num(b.get("calibration_s")), _num(n.get("calibration_s"))
        beside = bool(own_b and own_n)  # each row carries the calibration timed beside it
        row_b = own_b if beside else node_calibration_s(base_meta, b.get("node"))
        row_n = own_n if beside else node_calibration_s(new_meta, n.get("node"))
        row_ratio = row_n / row_b if row_b and row_n else None  # each row by its own machine speed
        norm = raw.scaled(row_ratio) if row_ratio else raw
        if drift > 1.0 and not beside and not math.isnan(norm.lo):  # run-level figures: widen by the drift
            norm = RatioCI(norm.ratio, norm.lo / drift, norm.hi * drift, norm.n_base, norm.n_new)
        bm, nm = _num(b.get("peak_mem_bytes")), _num(n.get("peak_mem_bytes"))
        rec.update(verdict=time_verdict(norm, threshold), base_time_s_median=float(np.median(bs)),
                   new_time_s_median=float(np.median(ns)), base_n_samples=len(bs), new_n_samples=len(ns),
                   time_ratio_raw=raw.ratio, time_ratio_raw_lo=raw.lo, time_ratio_raw_hi=raw.hi,
                   calibration_ratio=row_ratio, time_ratio=norm.ratio, time_ratio_lo=norm.lo,
                   time_ratio_hi=norm.hi, base_peak_mem_bytes=bm, new_peak_mem_bytes=nm,
                   mem_ratio=nm / bm if bm and nm is not None else None, mem_verdict=mem_verdict(bm, nm),
                   base_rel_error=_num(b.get("rel_error")), new_rel_error=_num(n.get("rel_error")),
                   error_verdict=error_verdict(_num(b.get("rel_error")), _num(n.get("rel_error")), n.get("dtype")))
        if len(bs) < 2 or len(ns) < 2:
            rec["reason"] = "fewer than 2 samples on a side: no interval, no confident verdict"
        flagged = [(side, r.get("time_flags")) for side, r in (("BASE", b), ("NEW", n)) if r.get("time_trusted") is False]
        if flagged:  # an untrusted time never yields slower, faster or same
            rec["verdict"] = "untrusted"
            rec["reason"] = "; ".join(f"{side}: {', '.join(json.loads(f)) if isinstance(f, str) and f else 'flagged'}"
                                      for side, f in flagged)
        rec.update(_fidelity_columns(b, n))
        problem = output_problem(b.get("rel_error"), n.get("rel_error"), n.get("dtype"))
        if problem:  # whatever the time
            rec.update(verdict="wrong", reason=problem)
        out.append(rec)
    frame = pd.DataFrame(out, columns=COLUMNS)
    noisy = [bool(r.get("time_noisy")) if not pd.isna(r.get("time_noisy")) else False
             for rows in (base, new) for r in rows.values() if r.get("status") == "ok"]
    frame.attrs.update(threshold=threshold, confidence=confidence, base_calibration_s=cal_b,
                       new_calibration_s=cal_n, calibration_ratio=cal_ratio,
                       base_calibration_spread=calibration_spread(base_meta),
                       new_calibration_spread=calibration_spread(new_meta), drift_factor=drift,
                       noisy_rows=sum(noisy))
    return frame


def mem_verdict(base: float | None, new: float | None) -> str | None:
    """Peak memory is deterministic on CPU and nearly so on CUDA: a change beyond ``MEM_TOLERANCE`` is
    a verdict without statistics."""
    if base is None or new is None:
        return None
    factor, floor = MEM_TOLERANCE
    if new > base * factor and new - base > floor:
        return "more"
    if base > new * factor and base - new > floor:
        return "less"
    return "same"


def error_verdict(base: float | None, new: float | None, dtype) -> str | None:
    """``worse`` when the new error is non-finite or above the dtype's forward tolerance (``attnbench
    check``'s), or ``ERROR_FACTOR`` x the base's while above 1% of that tolerance; ``missing`` when the
    base's was measured and the new one's was not; None when neither was."""
    if new is None:
        return "missing" if base is not None else None
    tol = TOLERANCES.get(str(dtype), TOLERANCES["float32"])[0]
    if not math.isfinite(new) or new > tol or (base is not None and new > ERROR_FACTOR * base and new > tol / 100):
        return "worse"
    return "same"


def fidelity_verdict(base: float | None, new: float | None) -> str | None:
    """``worse`` when NEW's fidelity error (output error against global, or perplexity) is non-finite or
    beyond ``FIDELITY_TOLERANCE`` above BASE's; ``missing`` when BASE's was measured and NEW's was not;
    ``better`` or ``same`` otherwise; None when BASE has none."""
    if base is None:
        return None
    if new is None:
        return "missing"
    factor, floor = FIDELITY_TOLERANCE
    if not math.isfinite(new) or (new > base * factor and new - base > floor):
        return "worse"
    return "better" if base > new * factor and base - new > floor else "same"


def _fidelity_columns(b: dict, n: dict) -> dict:
    """The compare columns of the first fidelity figure (``FIDELITY_KEYS``) either row has."""
    for key in FIDELITY_KEYS:
        base, new = _num(b.get(key)), _num(n.get(key))
        if base is not None or new is not None:
            return {"base_fidelity": base, "new_fidelity": new, "fidelity_verdict": fidelity_verdict(base, new)}
    return {}


def summarize(result: pd.DataFrame) -> dict:
    """Counts per verdict, the compared count, and the exit status the comparison implies: 1 when a
    case is wrong, slower or broken, or uses more memory, or is less accurate (its error worse or
    missing); 2 when nothing was compared."""
    counts = {v: int((result["verdict"] == v).sum()) for v in VERDICTS}
    compared = counts["slower"] + counts["accepted"] + counts["faster"] + counts["same"] + counts["untrusted"]
    worse = result["verdict"].isin(FAILING)
    if "mem_verdict" in result.columns:
        worse |= (result["mem_verdict"] == "more") | result["error_verdict"].isin(("worse", "missing"))
    if "fidelity_verdict" in result.columns:
        worse |= result["fidelity_verdict"].isin(("worse", "missing"))
    failing = result.loc[worse, "case_id"].tolist()
    judged = compared + counts["wrong"] + counts["broken"] + counts["fixed"]
    exit_code = 2 if judged == 0 else (1 if failing else 0)
    return {"counts": counts, "compared": compared, "exit_code": exit_code, "failing": failing}


# ---- loading and the command ------------------------------------------------------------------
def load_for_compare(run_dir: str | Path, side: str) -> tuple[pd.DataFrame, dict]:
    """``harness.store.load.load_run``, with every way a folder can be unreadable turned into an InputError."""
    try:
        return load_run(run_dir)
    except InputError as exc:
        raise InputError(f"{side} run: {exc}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged Parquet, journal or metadata
        raise InputError(f"{side} run {run_dir} is unreadable ({type(exc).__name__}: {exc}); hint: pass a folder "
                         "made by `attnbench sweep`") from None
    except Exception as exc:  # pyarrow's errors (ArrowInvalid and kin) do not share a base with the above
        if type(exc).__module__.startswith("pyarrow"):
            raise InputError(f"{side} run {run_dir} is unreadable ({type(exc).__name__}: {exc})") from None
        raise
