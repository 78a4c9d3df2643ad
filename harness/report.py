"""`attnbench report` (one self-contained HTML file from one or more run folders) and `attnbench run`
(the main job: the default sweep for this machine, then its report).

The report is a single file: plots are base64 PNGs drawn with matplotlib's Agg canvas, tables are
plain HTML with a few lines of inline JS to sort them; it opens from disk with no network. Every
report lives in <reports root>/<name>/index.html and <reports root>/index.html lists them all.
Heavy imports (matplotlib, seaborn, jinja2) happen inside functions, never at import time.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

from harness.patterns import InputError

REPORTS_ROOT = Path("reports")
DEFAULT_BASELINE = "naive"
INDEX = "index.html"


# ---- loading ----------------------------------------------------------------------------------
def load_runs(run_dirs) -> list[tuple]:
    """[(tidy DataFrame, run.json metadata, folder)] for each run folder; bad input is an InputError."""
    from harness.results import load_run

    if not run_dirs:
        raise InputError("no run folder given; hint: attnbench report results/<run-id>")
    runs, seen = [], {}
    for given in run_dirs:
        path = Path(given)
        if not path.exists():
            raise InputError(f"run folder {str(given)!r} does not exist; hint: pass a folder made by "
                             "`attnbench sweep`, e.g. results/<run-id> (ls results/)")
        if not path.is_dir():
            raise InputError(f"{str(given)!r} is a file, not a run folder; hint: pass the folder that holds "
                             "run.json, e.g. results/<run-id>")
        df, meta = load_run(path)
        run_id = str(meta.get("run_id") or path.name)
        if run_id in seen:
            raise InputError(f"run {run_id!r} is given twice ({seen[run_id]} and {path}); hint: give each run "
                             "folder once")
        seen[run_id] = path
        df = df.drop(columns=["time_samples_s"], errors="ignore")
        df["run_id"] = run_id  # rows of one folder belong to that folder's run
        runs.append((df, meta, path))
    return runs


def report_name(run_ids: list[str]) -> str:
    """Folder name of a report: the run id, or the run ids joined by ``__vs__`` (shortened if long)."""
    name = "__vs__".join(run_ids)
    if len(name) > 120:
        name = f"{run_ids[0]}__and-{len(run_ids) - 1}-more"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "report"


def resolve_baseline(variants: list[str], baseline: str | None) -> tuple[str | None, str]:
    """(baseline, note). An explicit baseline must be in the runs; the default falls back quietly."""
    if baseline is not None:
        if baseline not in variants:
            raise InputError(f"baseline variant {baseline!r} is not in these runs; variants there: "
                             f"{', '.join(variants) or 'none'}; hint: --baseline {variants[0] if variants else 'naive'}")
        return baseline, ""
    if DEFAULT_BASELINE in variants or not variants:
        return (DEFAULT_BASELINE if variants else None), ""
    return variants[0], f"{DEFAULT_BASELINE} is not in these runs, so the baseline is {variants[0]}"


# ---- context ----------------------------------------------------------------------------------
def _utc(ts) -> str:
    if not isinstance(ts, (int, float)):
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(meta: dict) -> str:
    a, b = meta.get("started_at"), meta.get("finished_at")
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return ""
    s = b - a
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _run_tables(runs: list[tuple]) -> dict:
    """Environment, sweep, calibration and ceiling tables of the runs, side by side."""
    import pandas as pd

    from harness import plots

    ids = [str(m.get("run_id") or p.name) for _, m, p in runs]
    headers = ["", *ids]
    general = [("run folder", [str(p.resolve()) for _, _, p in runs]),
               ("status", [m.get("status") for _, m, _ in runs]),
               ("started", [_utc(m.get("started_at")) for _, m, _ in runs]),
               ("finished", [_utc(m.get("finished_at")) for _, m, _ in runs]),
               ("duration", [_duration(m) for _, m, _ in runs]),
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
            med = c.get("time_s_median")
            cal_rows.append({"run": run_id, "when": c.get("when"), "kernel": c.get("kernel"),
                             "median_ms": med * 1e3 if isinstance(med, (int, float)) else None,
                             "iqr_ms": c["time_s_iqr"] * 1e3 if isinstance(c.get("time_s_iqr"), (int, float)) else None,
                             "vs_first_pct": (med / start - 1) * 100 if med and start else None,
                             "at": _utc(c.get("at")), "error": c.get("error", "")})
        for dtype, value in (m.get("ceilings_flops_per_s") or {}).items():
            ceil_rows.append({"run": run_id, "device": (m.get("provenance") or {}).get("device"),
                              "dtype": dtype, "gflop_per_s": value / 1e9 if value else None})
    Col = plots.Col
    return {
        "general": plots.key_value_table(general, headers),
        "provenance": plots.key_value_table(provenance, headers),
        "sweep": plots.key_value_table(sweep, headers),
        "calibration": plots.html_table(pd.DataFrame(cal_rows, columns=[
            "run", "when", "kernel", "median_ms", "iqr_ms", "vs_first_pct", "at", "error"]), [
            Col("run", "run"), Col("when", "when"), Col("kernel", "kernel"),
            Col("median_ms", "median (ms)", plots.fmt_num, True), Col("iqr_ms", "IQR (ms)", plots.fmt_num, True),
            Col("vs_first_pct", "vs first (%)", plots.fmt_num, True), Col("at", "at"), Col("error", "error")]),
        "ceilings": plots.html_table(pd.DataFrame(ceil_rows, columns=["run", "device", "dtype", "gflop_per_s"]), [
            Col("run", "run"), Col("device", "device"), Col("dtype", "dtype"),
            Col("gflop_per_s", "matmul ceiling (GFLOP/s)", plots.fmt_num, True)]),
    }


def _notes(runs: list[tuple], prep) -> list[str]:
    import pandas as pd

    notes = []
    for df, m, p in runs:
        run_id = m.get("run_id") or p.name
        if m.get("status") != "complete":
            notes.append(f"run {run_id} is {m.get('status')!s}: {len(df)} cells so far; finish it with "
                         f"attnbench sweep --resume {p}")
        cal = [c.get("time_s_median") for c in (m.get("calibration") or []) if isinstance(c, dict)]
        cal = [c for c in cal if isinstance(c, (int, float)) and c > 0]
        if len(cal) >= 2 and max(cal) / min(cal) > 1.2:
            notes.append(f"run {run_id}: the calibration kernel's time changed by {max(cal) / min(cal) - 1:.0%} "
                         "during the run, so the machine was busy or throttling; its timings are not reliable")
        if (m.get("provenance") or {}).get("git_dirty"):
            notes.append(f"run {run_id} was made from a working tree with uncommitted changes")
    ok = prep["status"] == "ok"
    noisy = int(pd.array(prep.loc[ok, "time_noisy"], dtype="boolean").fillna(False).sum()) if len(prep) else 0
    if noisy:
        notes.append(f"{noisy} ok cells have noisy timings (wide IQR): see the 'noisy' column of the tidy table")
    return notes


def build_context(runs: list[tuple], baseline: str | None = None, generated_at: str | None = None) -> dict:
    """Everything the template shows, from loaded runs. Pure apart from the clock when not given."""
    import pandas as pd

    from harness import plots

    frames = [df for df, _, _ in runs]
    raw = pd.concat(frames, ignore_index=True) if any(len(f) for f in frames) else frames[0]
    prep = plots.prepare(raw)
    variants = sorted(prep["variant"].unique())
    baseline, baseline_note = resolve_baseline(variants, baseline)
    multi_series = prep["series"].nunique() > 1
    shapes = sorted(prep["shape"].unique())
    Col = plots.Col
    series_col = [Col("series", "run")] if multi_series else []
    shape_col = [Col("shape", "shape")] if len(shapes) > 1 else []

    sections = []
    for k, shape in enumerate(shapes, 1):
        sub = prep[prep["shape"] == shape]
        exps = plots.fit_exponents(sub)
        cross = plots.crossovers(sub)
        rel = plots.relative_to_baseline(sub, baseline) if baseline else plots.relative_to_baseline(sub, "")
        ceil = plots.ceiling_summary(sub)
        key_cols = [*series_col, Col("variant", "variant"), Col("pattern_label", "pattern"),
                    Col("causal", "causal", plots.fmt_bool), Col("pass", "pass")]
        sections.append({
            "id": f"shape{k}", "shape": shape, "single_n": sub["seq_len"].nunique() < 2,
            "time_img": plots.figure_img(plots.plot_vs_n(sub, "time_ms", "time (ms, median)",
                                                         f"Time vs sequence length, {shape}"),
                                         f"time vs sequence length, {shape}"),
            "mem_img": plots.figure_img(plots.plot_vs_n(sub, "peak_mem_mib", "peak memory (MiB)",
                                                        f"Peak memory vs sequence length, {shape}"),
                                        f"peak memory vs sequence length, {shape}"),
            "exponents": plots.html_table(exps, [*key_cols,
                                                 Col("time_exponent", "time exponent", plots.fmt_exp, True),
                                                 Col("mem_exponent", "memory exponent", plots.fmt_exp, True),
                                                 Col("range", "measured range"), Col("note", "note")]),
            "crossovers": plots.html_table(cross, [*series_col, Col("pattern_label", "pattern"),
                                                   Col("causal", "causal", plots.fmt_bool), Col("pass", "pass"),
                                                   Col("faster", "faster"), Col("slower", "than"),
                                                   Col("from_n", "from N", plots.fmt_text, True),
                                                   Col("slower_at_n", "slower at N", plots.fmt_text, True),
                                                   Col("text", "reading")]),
            "n_crossovers": len(cross),
            "baseline_crossovers": [
                (f"{r['series']}: " if multi_series else "")
                + f"{r['pattern_label']}{', causal' if r['causal'] else ''}, {r['pass']}: {r['text']}"
                for r in cross.to_dict("records") if baseline in (r["faster"], r["slower"])],
            "speedup_img": plots.figure_img(plots.plot_baseline_heatmap(
                rel, "speedup", baseline or "", f"Speedup over {baseline} (its time / variant time), {shape}"),
                f"speedup over {baseline}, {shape}") if baseline else None,
            "saving_img": plots.figure_img(plots.plot_baseline_heatmap(
                rel, "memory_saving", baseline or "",
                f"Memory saving vs {baseline} (its peak / variant peak), {shape}"),
                f"memory saving vs {baseline}, {shape}") if baseline else None,
            "relative": plots.html_table(rel, [*key_cols, Col("seq_len", "N", plots.fmt_text, True), Col("status", "status"),
                                               Col("baseline_status", f"{baseline} status"),
                                               Col("speedup", "speedup (x)", plots.fmt_num, True),
                                               Col("memory_saving", "memory saving (x)", plots.fmt_num, True),
                                               Col("time_ms", "time (ms)", plots.fmt_num, True),
                                               Col("baseline_time_ms", f"{baseline} time (ms)", plots.fmt_num, True),
                                               Col("peak_mem_mib", "peak (MiB)", plots.fmt_num, True),
                                               Col("baseline_peak_mem_mib", f"{baseline} peak (MiB)", plots.fmt_num,
                                                   True)]),
            "ceiling_img": plots.figure_img(plots.plot_ceiling(sub, f"Fraction of the matmul ceiling, {shape}"),
                                            f"fraction of the matmul ceiling, {shape}"),
            "ceilings": plots.html_table(ceil, [*key_cols, Col("gflop_per_s", "best GFLOP/s", plots.fmt_num, True),
                                                Col("ceiling_pct", "% of ceiling", plots.fmt_num, True),
                                                Col("seq_len", "at N", plots.fmt_text, True),
                                                Col("ceiling_gflop_per_s", "ceiling (GFLOP/s)", plots.fmt_num, True)]),
        })

    errors = plots.worst_errors(prep)
    errors["where"] = [f"{'causal ' if c else ''}{p}, N = {n}" for c, p, n in
                       zip(errors["causal"], errors["pass"], errors["seq_len"])]
    errors["twin_note"] = [f"on a smaller twin (N = {n})" if t else "on the timed case"
                           for t, n in zip(errors["error_on_twin"], errors["error_seq_len"])]
    fails = plots.failures(prep)
    counts = plots.status_counts(prep)
    tidy_cols = [*series_col, *shape_col, Col("variant", "variant"), Col("pattern_label", "pattern"),
                 Col("causal", "causal", plots.fmt_bool), Col("pass", "pass"), Col("seq_len", "N", plots.fmt_text, True),
                 Col("dtype", "dtype"), Col("device", "device"), Col("status", "status"),
                 Col("time_ms", "time median (ms)", plots.fmt_num, True),
                 Col("time_iqr_ms", "time IQR (ms)", plots.fmt_num, True),
                 Col("time_noisy", "noisy", plots.fmt_bool),
                 Col("time_n_samples", "samples", plots.fmt_text, True),
                 Col("peak_mem_mib", "peak memory (MiB)", plots.fmt_num, True),
                 Col("gflop_per_s", "GFLOP/s", plots.fmt_num, True),
                 Col("ceiling_pct", "% of ceiling", plots.fmt_num, True),
                 Col("rel_error_f", "rel. error", plots.fmt_sci, True),
                 Col("error_on_twin", "error on twin", plots.fmt_bool)]
    tidy = prep.sort_values(["series", "shape", "variant", "pattern", "causal", "pass", "seq_len"], kind="stable")
    run_ids = [str(m.get("run_id") or p.name) for _, m, p in runs]
    return {
        "title": "attnbench report: " + ", ".join(run_ids),
        "run_ids": run_ids,
        "generated_at": generated_at or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "variants": variants,
        "baseline": baseline,
        "baseline_note": baseline_note,
        "notes": _notes(runs, prep),
        "multi": len(runs) > 1,
        "runs": _run_tables(runs),
        "counts": plots.html_table(counts, [*series_col, Col("variant", "variant"), *[
            Col(s, s, plots.fmt_text, True) for s in counts.columns if s not in ("series", "variant")]]),
        "sections": sections,
        "errors": plots.html_table(errors, [*series_col, Col("variant", "variant"), Col("pattern_label", "pattern"),
                                            Col("rel_error", "worst rel. error", plots.fmt_sci, True),
                                            Col("where", "worst at"), Col("twin_note", "measured"),
                                            Col("cells", "ok cells", plots.fmt_text, True),
                                            Col("twins", "of them on twins", plots.fmt_text, True)]),
        "failures": plots.html_table(fails, [*series_col, *shape_col, Col("variant", "variant"),
                                             Col("pattern_label", "pattern"), Col("causal", "causal", plots.fmt_bool),
                                             Col("pass", "pass"), Col("seq_len", "N", plots.fmt_text, True),
                                             Col("status", "status"), Col("reason", "reason")]),
        "n_failures": len(fails),
        "failure_reasons": plots.html_table(plots.failure_reasons(prep), [
            *series_col, Col("variant", "variant"), Col("status", "status"), Col("reason", "reason"),
            Col("cells", "cells", plots.fmt_text, True), Col("patterns", "patterns"), Col("passes", "passes"),
            Col("seq_lens", "N")]),
        "tidy": plots.html_table(tidy, tidy_cols),
        "n_rows": len(prep),
    }


def _environment():
    from jinja2 import Environment, PackageLoader

    return Environment(loader=PackageLoader("harness", "templates"), autoescape=True, trim_blocks=True,
                       lstrip_blocks=True)


def render_report(runs: list[tuple], baseline: str | None = None, generated_at: str | None = None) -> str:
    """The report's HTML text for loaded runs (see load_runs)."""
    return _environment().get_template("report.html").render(**build_context(runs, baseline, generated_at))


def build_report(run_dirs, out: str | Path | None = None, baseline: str | None = None,
                 reports_root: str | Path | None = None) -> tuple[Path, Path | None]:
    """Write the report of ``run_dirs``; returns (report path, reports index path or None).

    Default output: <reports_root>/<name>/index.html with reports_root ``reports``. With ``out`` and
    no ``reports_root``, an ``out`` named index.html is taken to sit in <root>/<name>/ and that root's
    index is updated; any other ``out`` is written alone.
    """
    runs = load_runs(run_dirs)
    run_ids = [str(m.get("run_id") or p.name) for _, m, p in runs]
    if out is None:
        root = Path(reports_root) if reports_root is not None else REPORTS_ROOT
        out = root / report_name(run_ids) / INDEX
    else:
        out = Path(out)
        if out.is_dir() or out.suffix.lower() not in (".html", ".htm"):
            raise InputError(f"-o {str(out)!r} must be an .html file path; hint: -o reports/<name>/index.html")
        root = Path(reports_root) if reports_root is not None else (out.parent.parent if out.name == INDEX else None)
    html = render_report(runs, baseline)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    index = None
    if root is not None and out.resolve().parent.parent == Path(root).resolve():
        index = update_index(root)
    return out, index


# ---- the index of reports ---------------------------------------------------------------------
class _HeadMeta(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self._in_title = False
        self.title = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "meta" and (a.get("name") or "").startswith("attnbench-"):
            self.meta[a["name"]] = a.get("content") or ""
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


INDEX_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>attnbench reports</title>
<link rel="icon" href="data:,">
<style>body{font:15px/1.5 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.35em .6em;text-align:left}
th{background:#f4f4f4}code{font-size:90%}</style></head><body>
<h1>attnbench reports</h1>
<p>{{ reports|length }} report{{ '' if reports|length == 1 else 's' }} in <code>{{ root }}</code>, newest first.
Regenerated by every <code>attnbench report</code>.</p>
<table><thead><tr><th>report</th><th>runs</th><th>variants</th><th>generated</th></tr></thead><tbody>
{% for r in reports %}<tr><td><a href="{{ r.href }}">{{ r.name }}</a></td><td>{{ r.runs }}</td>
<td>{{ r.variants }}</td><td>{{ r.generated }}</td></tr>
{% else %}<tr><td colspan="4">no reports yet</td></tr>{% endfor %}
</tbody></table></body></html>
"""


def update_index(root: str | Path) -> Path:
    """Rewrite <root>/index.html from every <root>/*/index.html found."""
    from jinja2 import Environment

    root = Path(root)
    reports = []
    for page in sorted(root.glob(f"*/{INDEX}")):
        parser = _HeadMeta()
        try:
            parser.feed(page.read_text(encoding="utf-8", errors="replace")[:20000])
        except (OSError, AssertionError):
            continue
        reports.append({"name": page.parent.name, "href": f"{page.parent.name}/{INDEX}",
                        "runs": parser.meta.get("attnbench-runs", ""),
                        "variants": parser.meta.get("attnbench-variants", ""),
                        "generated": parser.meta.get("attnbench-generated", "")})
    reports.sort(key=lambda r: (r["generated"], r["name"]), reverse=True)
    html = Environment(autoescape=True).from_string(INDEX_TEMPLATE).render(reports=reports, root=str(root))
    root.mkdir(parents=True, exist_ok=True)
    path = root / INDEX
    tmp = path.with_name(INDEX + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path


# ---- commands ---------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    out, index = build_report(args.run_dirs, out=args.output, baseline=args.baseline, reports_root=args.reports_root)
    print(f"report: {out}")
    if index is not None:
        print(f"index: {index}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from harness.cli import sweep_config_from_args
    from harness.runner import run_sweep

    config = sweep_config_from_args(args, default_preset="default")
    if args.baseline is not None and args.baseline not in config.variants:
        raise InputError(f"baseline variant {args.baseline!r} is not in this sweep ({', '.join(config.variants)}); "
                         f"hint: --baseline {config.variants[0]}, or add it to --variants")
    run_dir = run_sweep(config, out=args.out, quiet=args.quiet)
    out, index = build_report([run_dir], baseline=args.baseline, reports_root=args.reports_root)
    print(f"results: {run_dir}")
    print(f"report: {out}")
    if index is not None:
        print(f"index: {index}")
    return 0


def register_cli(subparsers) -> None:
    from harness.cli import add_sweep_options

    p = subparsers.add_parser(
        "report", help="write one self-contained HTML report of one or more runs",
        description="Write one self-contained HTML file (plots embedded, no network needed) for one or more "
                    "run folders: environment and sweep, time and peak memory vs N (log-log), scaling exponents, "
                    "crossovers, speedup and memory saving vs a baseline, achieved FLOP/s vs the measured "
                    "ceiling, worst errors, every cell that did not run and why, and the tidy tables. Several "
                    "runs are shown side by side. Also rewrites <reports root>/index.html.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folder(s) made by `attnbench sweep`")
    p.add_argument("-o", "--output", help="report file (default: reports/<name>/index.html, name from the run ids)")
    p.add_argument("--baseline", help=f"variant that speedups and memory savings are relative to "
                                      f"(default: {DEFAULT_BASELINE})")
    p.add_argument("--reports-root", dest="reports_root",
                   help="folder of reports and of their index.html (default: reports)")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser(
        "run", help="the main job: the default sweep for this machine, then its report",
        description="Run the `default` preset sweep (CUDA float16 when torch sees a GPU, else CPU float32), "
                    "write it under results/<run-id>, then its report under reports/<run-id>/index.html. "
                    "Every sweep option overrides the preset.")
    add_sweep_options(p, default_preset="default")
    p.add_argument("--out", help="run folder (default: results/<run-id>)")
    p.add_argument("--baseline", help=f"baseline variant of the report (default: {DEFAULT_BASELINE})")
    p.add_argument("--reports-root", dest="reports_root",
                   help="folder of reports and of their index.html (default: reports)")
    p.set_defaults(func=cmd_run)


if __name__ == "__main__":  # pragma: no cover
    from harness.cli import main

    sys.exit(main(["report", *sys.argv[1:]]))
