"""`attnbench compare BASE_RUN NEW_RUN`: per-case new/base ratios with confidence intervals and a verdict.

Data and display are separate (as in torch.utils.benchmark's ``Compare``): ``compare_runs`` is a pure
function from two loaded runs to a tidy DataFrame (seconds, bytes, ratios); the ``render_*`` functions
turn that frame into text, Markdown, an HTML fragment or JSON and choose units only there.

Statistics. For a case measured in both runs, the point estimate is the ratio of median per-call
times, new / base. Its confidence interval is a percentile bootstrap of the ratio of medians: each
run's raw samples are resampled with replacement, independently, with a seed fixed per case id, so the
same inputs always give the same interval. Time ratios are then normalized by the machine: each run's
calibration figure is the median of its calibration entries' ``time_s_median`` (a fixed matmul timed at
the start and end of the run), and the normalized ratio is the raw ratio divided by
new calibration / base calibration, so a uniformly slower machine is not a regression. Both ratios
are reported. A case is ``slower`` only when the lower bound of the normalized interval is above the
threshold, ``faster`` only when its upper bound is below 1 / threshold, else ``same``.

The bootstrap holds only within-run noise. Machine drift during a run is not in it, so the normalized
interval is widened by each run's calibration spread (max / min of its calibration medians): a case
measured at any point of a run that drifted by 30% can be off by that much, and a verdict then needs
a slowdown larger than drift and threshold together. Between-process variance is still not covered:
that is what the threshold is for, and why ``attnbench ci`` measures several fresh processes per side.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.patterns import InputError

DEFAULT_THRESHOLD = 1.10
DEFAULT_CONFIDENCE = 0.95
N_BOOTSTRAP = 2000
FORMATS = ("text", "markdown", "html", "json")

# Verdicts. slower and broken fail the comparison (exit 1); the others do not.
VERDICTS = ("slower", "broken", "accepted", "faster", "same", "fixed", "not run", "new", "missing")
FAILING = ("slower", "broken")
VERDICT_HELP = {
    "slower": "normalized time ratio's confidence interval lies above the threshold",
    "broken": "ok in BASE, not ok in NEW (its status and reason are shown)",
    "accepted": "slower, but accepted by an [accept-regression: ...] commit marker (attnbench ci only)",
    "faster": "normalized time ratio's confidence interval lies below 1 / threshold",
    "same": "no confident change beyond the threshold",
    "fixed": "not ok in BASE, ok in NEW",
    "not run": "in both runs, ok in neither",
    "new": "only in NEW",
    "missing": "only in BASE",
}

COLUMNS = ["case_id", "verdict", "base_status", "new_status", "reason", "base_time_s_median", "new_time_s_median",
           "base_n_samples", "new_n_samples", "time_ratio_raw", "time_ratio_raw_lo", "time_ratio_raw_hi",
           "calibration_ratio", "time_ratio", "time_ratio_lo", "time_ratio_hi", "base_peak_mem_bytes",
           "new_peak_mem_bytes", "mem_ratio"]


# ---- statistics -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RatioCI:
    """new / base ratio of medians and its confidence interval (lo, hi); NaN bounds when undefined."""

    ratio: float
    lo: float
    hi: float
    n_base: int
    n_new: int

    def scaled(self, factor: float) -> "RatioCI":
        return RatioCI(self.ratio / factor, self.lo / factor, self.hi / factor, self.n_base, self.n_new)


def case_seed(key: str, seed: int = 0) -> int:
    """A stable per-case seed (crc32 of the key), so a case's interval does not depend on case order."""
    return zlib.crc32(key.encode("utf-8")) ^ seed


def median_ratio_ci(base, new, confidence: float = DEFAULT_CONFIDENCE, n_boot: int = N_BOOTSTRAP,
                    seed: int = 0) -> RatioCI:
    """Ratio of medians median(new) / median(base) with a percentile-bootstrap confidence interval.

    ``base`` and ``new`` are positive samples (seconds, or calibration-normalized times). Each side is
    resampled with replacement independently, ``n_boot`` times, with ``numpy.random.default_rng(seed)``.
    With fewer than 2 samples on a side the interval is undefined (NaN bounds): no confident verdict.
    """
    b = np.asarray(base, dtype=float)
    n = np.asarray(new, dtype=float)
    if b.size == 0 or n.size == 0:
        raise ValueError("median_ratio_ci needs at least one sample on each side")
    if (b <= 0).any() or (n <= 0).any() or not (np.isfinite(b).all() and np.isfinite(n).all()):
        raise ValueError("median_ratio_ci needs positive, finite samples")
    ratio = float(np.median(n) / np.median(b))
    if b.size < 2 or n.size < 2:
        return RatioCI(ratio, math.nan, math.nan, int(b.size), int(n.size))
    rng = np.random.default_rng(seed)
    mb = np.median(b[rng.integers(0, b.size, size=(n_boot, b.size))], axis=1)
    mn = np.median(n[rng.integers(0, n.size, size=(n_boot, n.size))], axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(mn / mb, [alpha, 1.0 - alpha])
    return RatioCI(ratio, float(lo), float(hi), int(b.size), int(n.size))


def time_verdict(ci: RatioCI, threshold: float) -> str:
    """slower / faster only with confidence (the whole interval beyond the threshold), else same."""
    if math.isnan(ci.lo) or math.isnan(ci.hi):
        return "same"
    if ci.lo > threshold:
        return "slower"
    if ci.hi < 1.0 / threshold:
        return "faster"
    return "same"


def calibration_s(meta: dict) -> float | None:
    """A run's machine-speed figure: the median of its calibration entries' time_s_median (None if none)."""
    values = [c.get("time_s_median") for c in meta.get("calibration") or [] if isinstance(c, dict)]
    values = [float(v) for v in values if isinstance(v, (int, float)) and v > 0 and math.isfinite(v)]
    return float(np.median(values)) if values else None


def calibration_spread(meta: dict) -> float | None:
    """max / min of a run's calibration medians (start, end, resume): how much machine speed moved."""
    values = [c.get("time_s_median") for c in meta.get("calibration") or [] if isinstance(c, dict)]
    values = [float(v) for v in values if isinstance(v, (int, float)) and v > 0 and math.isfinite(v)]
    return max(values) / min(values) if len(values) >= 2 else None


def check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 1.0):
        raise InputError(f"threshold must be a ratio above 1, got {threshold!r}; hint: --threshold 1.10 flags "
                         "cases more than 10% slower")


# ---- comparison -------------------------------------------------------------------------------
def _samples(row) -> list[float]:
    """Raw per-call samples of an ok row; the median alone when the samples were not kept."""
    samples = row.get("time_samples_s")
    if samples is not None and not (isinstance(samples, float) and math.isnan(samples)):
        values = [float(s) for s in samples if s is not None and float(s) > 0]
        if values:
            return values
    median = row.get("time_s_median")
    return [float(median)] if median is not None and not pd.isna(median) and float(median) > 0 else []


def _num(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


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
            rec["verdict"] = ("broken" if b_ok else "fixed") if b_ok != n_ok else "not run"
            rec["reason"] = str((n if b_ok or not n_ok else b).get("reason") or "")
            out.append(rec)
            continue
        bs, ns = _samples(b), _samples(n)
        if not bs or not ns:
            rec.update(verdict="broken" if not ns else "fixed", reason="status ok but no time recorded")
            out.append(rec)
            continue
        raw = median_ratio_ci(bs, ns, confidence, n_boot, case_seed(case_id, seed))
        norm = raw.scaled(cal_ratio) if cal_ratio else raw
        if drift > 1.0 and not math.isnan(norm.lo):
            norm = RatioCI(norm.ratio, norm.lo / drift, norm.hi * drift, norm.n_base, norm.n_new)
        bm, nm = _num(b.get("peak_mem_bytes")), _num(n.get("peak_mem_bytes"))
        rec.update(verdict=time_verdict(norm, threshold), base_time_s_median=float(np.median(bs)),
                   new_time_s_median=float(np.median(ns)), base_n_samples=len(bs), new_n_samples=len(ns),
                   time_ratio_raw=raw.ratio, time_ratio_raw_lo=raw.lo, time_ratio_raw_hi=raw.hi,
                   calibration_ratio=cal_ratio, time_ratio=norm.ratio, time_ratio_lo=norm.lo,
                   time_ratio_hi=norm.hi, base_peak_mem_bytes=bm, new_peak_mem_bytes=nm,
                   mem_ratio=nm / bm if bm and nm is not None else None)
        if len(bs) < 2 or len(ns) < 2:
            rec["reason"] = "fewer than 2 samples on a side: no interval, no confident verdict"
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


def summarize(result: pd.DataFrame) -> dict:
    """Counts per verdict, the compared count, and the exit status the comparison implies."""
    counts = {v: int((result["verdict"] == v).sum()) for v in VERDICTS}
    compared = counts["slower"] + counts["accepted"] + counts["faster"] + counts["same"]
    failing = counts["slower"] + counts["broken"]
    exit_code = 2 if compared + counts["broken"] + counts["fixed"] == 0 else (1 if failing else 0)
    return {"counts": counts, "compared": compared, "exit_code": exit_code,
            "failing": result.loc[result["verdict"].isin(FAILING), "case_id"].tolist()}


# ---- rendering (units chosen here only) -------------------------------------------------------
def fmt_time(seconds) -> str:
    if seconds is None or pd.isna(seconds):
        return "-"
    s = float(seconds)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= scale or unit == "ns":
            v = s / scale
            decimals = max(0, 2 - int(math.floor(math.log10(v)))) if v > 0 else 0
            return f"{v:.{decimals}f} {unit}"


def fmt_ratio(value) -> str:
    return "-" if value is None or pd.isna(value) else f"{float(value):.3f}"


def fmt_ci(lo, hi) -> str:
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return "-"
    return f"[{float(lo):.3f}, {float(hi):.3f}]"


def _order(result: pd.DataFrame) -> pd.DataFrame:
    rank = {v: i for i, v in enumerate(VERDICTS)}
    return result.assign(_r=result["verdict"].map(rank)).sort_values(["_r", "case_id"], kind="stable")


def _table(result: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["case", "base", "new", "raw ratio", "ratio (norm.)", f"{_conf(result)} CI (norm.)", "mem ratio",
              "verdict"]
    rows = []
    for r in _order(result).to_dict("records"):
        verdict = r["verdict"]
        if verdict == "not run":
            continue
        if verdict == "accepted":
            verdict += f" ({r['reason']})"
        elif verdict in ("broken", "fixed", "not run") and r["reason"]:
            verdict += f" ({r['base_status'] or '-'} -> {r['new_status'] or '-'}: {r['reason']})"
        rows.append([r["case_id"], fmt_time(r["base_time_s_median"]), fmt_time(r["new_time_s_median"]),
                     fmt_ratio(r["time_ratio_raw"]), fmt_ratio(r["time_ratio"]),
                     fmt_ci(r["time_ratio_lo"], r["time_ratio_hi"]), fmt_ratio(r["mem_ratio"]), verdict])
    if result["mem_ratio"].isna().all():  # not measured (attnbench ci): no column of dashes
        header.pop(6)
        rows = [row[:6] + row[7:] for row in rows]
    return header, rows


def _conf(result: pd.DataFrame) -> str:
    return f"{100 * result.attrs.get('confidence', DEFAULT_CONFIDENCE):g}%"


def _headline(result: pd.DataFrame, base_name: str, new_name: str) -> str:
    s = summarize(result)
    counts = ", ".join(f"{n} {v}" for v, n in s["counts"].items() if n)
    thr = result.attrs.get("threshold", DEFAULT_THRESHOLD)
    return (f"{new_name} vs {base_name}: {s['compared']} cases compared ({counts or 'none'}); "
            f"threshold {thr:g}x at {_conf(result)} confidence")


def _calibration_line(result: pd.DataFrame) -> str:
    a = result.attrs
    if not a.get("calibration_ratio"):
        return "calibration: unavailable in one run, so normalized ratios equal raw ratios"
    line = (f"calibration (matmul_f32_512): base {fmt_time(a['base_calibration_s'])}, new "
            f"{fmt_time(a['new_calibration_s'])}, new/base {a['calibration_ratio']:.3f}; "
            "verdicts use time ratios divided by it")
    moved = [f"{side} {100 * (a[f'{side}_calibration_spread'] - 1):.0f}%" for side in ("base", "new")
             if (a.get(f"{side}_calibration_spread") or 1.0) > 1.10]
    if moved:
        line += (f". Warning: machine speed moved during a run (calibration max/min: {', '.join(moved)}); "
                 "its ratios carry that load, not only code changes")
    if (a.get("drift_factor") or 1.0) > 1.0:
        line += f"; normalized intervals are widened by that drift (x{a['drift_factor']:.2f})"
    return line


def _footnotes(result: pd.DataFrame) -> list[str]:
    notes = []
    not_run = int((result["verdict"] == "not run").sum())
    if not_run:
        notes.append(f"{not_run} case(s) ok in neither run (unsupported, for instance) are not listed; "
                     "--format json lists them")
    if result.attrs.get("noisy_rows"):
        notes.append(f"{result.attrs['noisy_rows']} measurement(s) flagged noisy (IQR/median > 10%) in their run")
    return notes


def render_text(result: pd.DataFrame, base_name: str = "BASE", new_name: str = "NEW") -> str:
    header, rows = _table(result)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [_headline(result, base_name, new_name), _calibration_line(result), "", line(header),
           line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    notes = _footnotes(result)
    return "\n".join(out + ([""] + notes if notes else [])) + "\n"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(result: pd.DataFrame) -> str:
    """The comparison table alone, in GitHub-flavoured Markdown (failing verdicts in bold)."""
    header, rows = _table(result)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|"]
    for r in rows:
        cells = [f"`{_md_cell(r[0])}`", *map(_md_cell, r[1:-1]), f"**{_md_cell(r[-1])}**"
                 if r[-1].split(" ")[0] in FAILING else _md_cell(r[-1])]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def render_markdown(result: pd.DataFrame, base_name: str = "BASE", new_name: str = "NEW") -> str:
    """A GitHub-flavoured Markdown section, fit for $GITHUB_STEP_SUMMARY."""
    s = summarize(result)
    icon = {0: "no regression", 1: "REGRESSION", 2: "nothing compared"}[s["exit_code"]]
    notes = [_md_cell(n) + "  " for n in _footnotes(result)]
    return "\n".join([f"### attnbench compare: {icon}", "", _md_cell(_headline(result, base_name, new_name)), "",
                      _md_cell(_calibration_line(result)), "", markdown_table(result), *notes]) + ("\n" if notes else "")


_HTML_STYLE = (".attnbench-compare table{border-collapse:collapse;font:13px sans-serif}"
               ".attnbench-compare th,.attnbench-compare td{border:1px solid #ccc;padding:2px 6px}"
               ".attnbench-compare td.num{text-align:right;font-variant-numeric:tabular-nums}"
               ".attnbench-compare .slower,.attnbench-compare .broken{background:#fdd}"
               ".attnbench-compare .faster{background:#dfd}")


def render_html(result: pd.DataFrame, base_name: str = "BASE", new_name: str = "NEW") -> str:
    """A self-contained HTML fragment (its own scoped style, no scripts, every text escaped)."""
    esc = html.escape
    header, rows = _table(result)
    parts = ['<div class="attnbench-compare">', f"<style>{_HTML_STYLE}</style>",
             f"<p>{esc(_headline(result, base_name, new_name))}</p>", f"<p>{esc(_calibration_line(result))}</p>",
             "<table>", "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for r in rows:
        cls = esc(r[-1].split(" ")[0], quote=True)
        cells = [f"<td><code>{esc(r[0])}</code></td>"] + [f'<td class="num">{esc(c)}</td>' for c in r[1:-1]]
        cells.append(f"<td>{esc(r[-1])}</td>")
        parts.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>")
    parts += ["</tbody>", "</table>", *[f"<p>{esc(n)}</p>" for n in _footnotes(result)], "</div>"]
    return "\n".join(parts) + "\n"


def render_json(result: pd.DataFrame, base_name: str = "BASE", new_name: str = "NEW") -> str:
    records = json.loads(result.to_json(orient="records"))  # NaN/NA -> null
    return json.dumps({"base": base_name, "new": new_name, **{k: v for k, v in result.attrs.items()},
                       "summary": summarize(result), "cases": records}, indent=2) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown, "html": render_html, "json": render_json}


# ---- loading and the command ------------------------------------------------------------------
def load_for_compare(run_dir: str | Path, side: str) -> tuple[pd.DataFrame, dict]:
    """``results.load_run``, with every way a folder can be unreadable turned into an InputError."""
    from harness.results import load_run

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


def cmd_compare(args: argparse.Namespace) -> int:
    if args.format not in RENDERERS:
        raise InputError(f"unknown format {args.format!r}; valid formats: {', '.join(FORMATS)}")
    check_threshold(args.threshold)
    if not 0.5 <= args.confidence < 1.0:
        raise InputError(f"confidence must be in [0.5, 1), got {args.confidence!r}; hint: --confidence 0.95")
    base_df, base_meta = load_for_compare(args.base_run, "BASE")
    new_df, new_meta = load_for_compare(args.new_run, "NEW")
    result = compare_runs(base_df, base_meta, new_df, new_meta, args.threshold, args.confidence)
    summary = summarize(result)
    if summary["exit_code"] == 2:
        raise InputError(f"no case is in both {args.base_run} ({len(base_df)} rows) and {args.new_run} "
                         f"({len(new_df)} rows) with status ok in either; hint: compare runs of the same sweep")
    sys.stdout.write(RENDERERS[args.format](result, str(args.base_run), str(args.new_run)))
    if summary["failing"] and args.format != "json":
        print(f"regression: {', '.join(summary['failing'])}", file=sys.stderr)
    return summary["exit_code"]


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="compare two runs case by case: time and memory ratios, confidence, verdict",
        description="Compare NEW_RUN with BASE_RUN. For every case in both runs: new/base ratio of median time "
                    "(raw, and normalized by each run's calibration kernel so a uniformly slower machine is not a "
                    "regression) with a bootstrap confidence interval, the peak-memory ratio, and a verdict: "
                    "slower, faster, same, broken (ok in BASE only), fixed, not run, new (NEW only), missing "
                    "(BASE only). Exit status: 1 if any case is slower beyond --threshold with confidence or "
                    "broken; 2 if no case could be compared or a run is unreadable; 0 otherwise.")
    p.add_argument("base_run", metavar="BASE_RUN", help="run folder of the baseline (made by attnbench sweep)")
    p.add_argument("new_run", metavar="NEW_RUN", help="run folder to judge against it")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="new/base time ratio above which a case is slower (default: 1.10)")
    p.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                   help="confidence level of the bootstrap interval (default: 0.95)")
    p.add_argument("--format", default="text", choices=FORMATS, help="output format (default: text)")
    p.set_defaults(func=cmd_compare)
