"""What the report page shows: everything ``templates/report.html`` reads, built from loaded runs.

``build_context`` prepares the runs' frame (``harness.render.prepare``), builds the tables of
``harness.render.cell_tables`` and ``harness.render.scaling``, draws the figures of
``harness.render.figures`` and lays both out as escaped HTML fragments, per shape, next to the
environment, sweep, calibration and ceiling tables of each run and what a reader must see first: one
verdict per run on how far its timings can be trusted (``harness.render.verdict``), which variant to
use per case (``harness.render.answer``), quality versus cost where the rows have fidelity columns
(``harness.render.quality``), the variants that cannot run on the device at all, and the notes: an
unfinished run, a dirty tree, noisy timings.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from harness.analysis.trust_frame import untrusted_mask
from harness.core.errors import InputError
from harness.core.names import DEFAULT_BASELINE
from harness.render.answer import (
    answer_rows,
    answer_summary,
    answer_table,
    glance_table,
    mark_suspicious,
    unavailable,
)
from harness.render.cell_tables import (
    ceiling_summary,
    failure_reasons,
    failures,
    status_counts,
    untrusted_cells,
    worst_errors,
)
from harness.render.figures import (
    figure_img,
    plot_baseline_heatmap,
    plot_ceiling,
    plot_vs_n,
)
from harness.render.roofline import plot_roofline
from harness.render.prepare import prepare
from harness.render.quality import quality_section
from harness.render.repro import repro_command
from harness.render.run_tables import runs_tables
from harness.render.suspicious import suspicious_section, suspicious_table
from harness.render.scaling import crossovers, fit_exponents, relative_to_baseline
from harness.render.tables import Col, html_table
from harness.render.timeline import ceilings_text, plot_timeline
from harness.render.verdict import trust_verdict
from harness.render.units import (
    fmt_bool,
    fmt_exp,
    fmt_num,
    fmt_sci,
    fmt_text,
)


def resolve_baseline(variants: list[str], baseline: str | None) -> tuple[str | None, str]:
    """(baseline, note). An explicit baseline must be in the runs; the default falls back quietly."""
    if baseline is not None:
        if baseline not in variants:
            hint = variants[0] if variants else DEFAULT_BASELINE
            raise InputError(f"baseline variant {baseline!r} is not in these runs; variants there: "
                             f"{', '.join(variants) or 'none'}; hint: --baseline {hint}")
        return baseline, ""
    if DEFAULT_BASELINE in variants or not variants:
        return (DEFAULT_BASELINE if variants else None), ""
    return variants[0], f"{DEFAULT_BASELINE} is not in these runs, so the baseline is {variants[0]}"


def _notes(runs: list[tuple], prep: pd.DataFrame) -> list[str]:
    notes = []
    for df, m, p in runs:
        run_id = m.get("run_id") or p.name
        if m.get("status") != "complete":
            notes.append(f"run {run_id} is {m.get('status')!s}: {len(df)} cells so far; finish it with "
                         f"attnbench sweep --resume {p}")
        if (m.get("provenance") or {}).get("git_dirty"):
            notes.append(f"run {run_id} was made from a working tree with uncommitted changes")
    ok = prep["status"] == "ok"
    noisy = int(pd.array(prep.loc[ok, "time_noisy"], dtype="boolean").fillna(False).sum()) if len(prep) else 0
    assessed = bool(prep.loc[ok, "time_trusted"].notna().any()) if "time_trusted" in prep.columns else False
    if noisy and not assessed:  # with trust flags, noisy cells are among the flagged ones of the verdict
        notes.append(f"{noisy} ok cells have noisy timings (wide IQR): see the 'noisy' column of the tidy table")
    return notes


def twin_note(row: dict) -> str:
    """Where an error was measured: the timed case, or a twin named by what is smaller than the timed case."""
    if not row.get("error_on_twin"):
        return "on the timed case"
    smaller = []
    for label, timed, twin in (("N", "seq_len", "error_seq_len"), ("batch", "batch", "error_batch"),
                               ("heads", "heads", "error_heads")):
        a, b = row.get(timed), row.get(twin)
        if a is not None and b is not None and pd.notna(a) and pd.notna(b) and int(a) != int(b):
            smaller.append(f"{label} = {int(b)} instead of {int(a)}")
    return f"on a smaller twin ({', '.join(smaller)})" if smaller else "on a smaller twin"


def timelines(runs: list[tuple]) -> list[dict]:
    """One figure per run: calibration and host load of each cell over the run (harness.render.timeline),
    with the ceilings measured during it as text."""
    out = []
    for df, m, p in runs:
        run_id = str(m.get("run_id") or p.name)
        out.append({"run_id": run_id, "ceilings": ceilings_text(m),
                    "img": figure_img(plot_timeline(df, {**m, "run_id": run_id}),
                                      f"calibration and host load over run {run_id}")})
    return out


def build_context(runs: list[tuple], baseline: str | None = None, generated_at: str | None = None) -> dict:
    """Everything the template shows, from loaded runs. Pure apart from the clock when not given."""
    frames = [df for df, _, _ in runs]
    raw = pd.concat(frames, ignore_index=True) if any(len(f) for f in frames) else frames[0]
    prep = prepare(raw)
    variants = sorted(prep["variant"].unique())
    baseline, baseline_note = resolve_baseline(variants, baseline)
    multi_series = prep["series"].nunique() > 1
    shapes = sorted(prep["shape"].unique())
    series_col = [Col("series", "run")] if multi_series else []
    shape_col = [Col("shape", "shape")] if len(shapes) > 1 else []

    sections = []
    for k, shape in enumerate(shapes, 1):
        sub = prep[prep["shape"] == shape]
        exps = fit_exponents(sub)
        cross = crossovers(sub)
        rel = relative_to_baseline(sub, baseline) if baseline else relative_to_baseline(sub, "")
        ceil = ceiling_summary(sub)
        key_cols = [*series_col, Col("variant", "variant"), Col("pattern_label", "pattern"),
                    Col("causal", "causal", fmt_bool), Col("pass", "pass")]
        sections.append({
            "id": f"shape{k}", "shape": shape, "single_n": sub["seq_len"].nunique() < 2,
            "n_untrusted": int(untrusted_mask(sub).sum()),
            "time_img": figure_img(plot_vs_n(sub, "time_ms", "time (ms, median)",
                                                         f"Time vs sequence length, {shape}"),
                                         f"time vs sequence length, {shape}"),
            "mem_img": figure_img(plot_vs_n(sub, "peak_mem_mib", "peak memory (MiB)",
                                                        f"Peak memory vs sequence length, {shape}"),
                                        f"peak memory vs sequence length, {shape}"),
            "exponents": html_table(exps, [*key_cols,
                                                 Col("time_exponent", "time exponent", fmt_exp, True),
                                                 Col("mem_exponent", "memory exponent", fmt_exp, True),
                                                 Col("range", "measured range"),
                                                 Col("untrusted", "untrusted left out", fmt_text, True),
                                                 Col("note", "note")]),
            "crossovers": html_table(cross, [*series_col, Col("pattern_label", "pattern"),
                                                   Col("causal", "causal", fmt_bool), Col("pass", "pass"),
                                                   Col("faster", "faster"), Col("slower", "than"),
                                                   Col("from_n", "from N", fmt_text, True),
                                                   Col("slower_at_n", "slower at N", fmt_text, True),
                                                   Col("untrusted", "untrusted left out", fmt_text, True),
                                                   Col("text", "reading")]),
            "n_crossovers": len(cross),
            "baseline_crossovers": [
                (f"{r['series']}: " if multi_series else "")
                + f"{r['pattern_label']}{', causal' if r['causal'] else ''}, {r['pass']}: {r['text']}"
                for r in cross.to_dict("records") if baseline in (r["faster"], r["slower"])],
            "speedup_img": figure_img(plot_baseline_heatmap(
                rel, "speedup", baseline or "", f"Speedup over {baseline} (its time / variant time), {shape}"),
                f"speedup over {baseline}, {shape}") if baseline else None,
            "saving_img": figure_img(plot_baseline_heatmap(
                rel, "memory_saving", baseline or "",
                f"Memory saving vs {baseline} (its peak / variant peak), {shape}"),
                f"memory saving vs {baseline}, {shape}") if baseline else None,
            "relative": html_table(rel, [*key_cols, Col("seq_len", "N", fmt_text, True), Col("status", "status"),
                                               Col("baseline_status", f"{baseline} status"),
                                               Col("speedup", "speedup (x)", fmt_num, True),
                                               Col("memory_saving", "memory saving (x)", fmt_num, True),
                                               Col("time_ms", "time (ms)", fmt_num, True),
                                               Col("baseline_time_ms", f"{baseline} time (ms)", fmt_num, True),
                                               Col("peak_mem_mib", "peak (MiB)", fmt_num, True),
                                               Col("baseline_peak_mem_mib", f"{baseline} peak (MiB)", fmt_num,
                                                   True)]),
            "ceiling_img": figure_img(plot_ceiling(sub, f"Fraction of the matmul ceiling, {shape}"),
                                            f"fraction of the matmul ceiling, {shape}"),
            "ceilings": html_table(ceil, [*key_cols, Col("gflop_per_s", "best GFLOP/s", fmt_num, True),
                                                Col("ceiling_pct", "% of ceiling", fmt_num, True),
                                                Col("seq_len", "at N", fmt_text, True),
                                                Col("ceiling_gflop_per_s", "ceiling (GFLOP/s)", fmt_num, True)]),
        })

    errors = worst_errors(prep)
    errors["where"] = [f"{'causal ' if c else ''}{p}, N = {n}" for c, p, n in
                       zip(errors["causal"], errors["pass"], errors["seq_len"])]
    errors["twin_note"] = [twin_note(r) for r in errors.to_dict("records")]
    metas = {str(m.get("run_id") or p.name): m for _, m, p in runs}
    with_repro = prep.assign(repro=[repro_command(r, metas.get(r["run_id"])) for r in prep.to_dict("records")]
                             if len(prep) else [])
    fails = failures(with_repro)
    flagged = untrusted_cells(with_repro)
    counts = status_counts(prep)
    tidy_cols = [*series_col, *shape_col, Col("variant", "variant"), Col("pattern_label", "pattern"),
                 Col("causal", "causal", fmt_bool), Col("pass", "pass"), Col("seq_len", "N", fmt_text, True),
                 Col("dtype", "dtype"), Col("device", "device"), Col("status", "status"),
                 Col("time_ms", "time median (ms)", fmt_num, True),
                 Col("time_iqr_ms", "time IQR (ms)", fmt_num, True),
                 Col("time_noisy", "noisy", fmt_bool),
                 Col("time_trusted", "trusted", fmt_bool),
                 Col("flags_text", "flags"),
                 Col("time_n_samples", "samples", fmt_text, True),
                 Col("peak_mem_mib", "peak memory (MiB)", fmt_num, True),
                 Col("gflop_per_s", "GFLOP/s", fmt_num, True),
                 Col("ceiling_pct", "% of ceiling", fmt_num, True),
                 Col("rel_error_f", "rel. error", fmt_sci, True),
                 Col("error_on_twin", "error on twin", fmt_bool),
                 Col("reason", "reason"), Col("repro", "measure it again")]
    tidy = with_repro.sort_values(["series", "shape", "variant", "pattern", "causal", "pass", "seq_len"],
                                  kind="stable")
    run_ids = [str(m.get("run_id") or p.name) for _, m, p in runs]
    choice = mark_suspicious(answer_rows(prep, baseline, metas), suspicious_table(prep))
    return {
        "title": "attnbench report: " + ", ".join(run_ids),
        "run_ids": run_ids,
        "generated_at": generated_at or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "variants": variants,
        "baseline": baseline,
        "baseline_note": baseline_note,
        "trust": trust_verdict(runs, prep),
        "answer": answer_table(choice, baseline, multi_series, len(shapes) > 1),
        "glance": glance_table(choice, multi_series, len(shapes) > 1),
        "answer_summary": answer_summary(choice, baseline),
        "n_answers": len(choice),
        **suspicious_section(prep),
        "unavailable": unavailable([m for _, m, _ in runs]),
        "quality": quality_section(raw, [m for _, m, _ in runs]),
        "notes": _notes(runs, prep),
        "multi": len(runs) > 1,
        "runs": runs_tables(runs),
        "timelines": timelines(runs),
        "counts": html_table(counts, [*series_col, Col("variant", "variant"), *[
            Col(s, s, fmt_text, True) for s in counts.columns if s not in ("series", "variant")]]),
        "sections": sections,
        "roofline_img": figure_img(plot_roofline(raw), "roofline: achieved FLOP/s against arithmetic intensity"),
        "errors": html_table(errors, [*series_col, Col("variant", "variant"), Col("pattern_label", "pattern"),
                                            Col("rel_error", "worst rel. error", fmt_sci, True),
                                            Col("where", "worst at"), Col("twin_note", "measured"),
                                            Col("cells", "ok cells", fmt_text, True),
                                            Col("twins", "of them on twins", fmt_text, True)]),
        "failures": html_table(fails, [*series_col, *shape_col, Col("variant", "variant"),
                                             Col("pattern_label", "pattern"), Col("causal", "causal", fmt_bool),
                                             Col("pass", "pass"), Col("seq_len", "N", fmt_text, True),
                                             Col("status", "status"), Col("reason", "reason"),
                                             Col("repro", "measure it again")], table_id="failures-table"),
        "n_failures": len(fails),
        "flagged": html_table(flagged, [*series_col, *shape_col, Col("variant", "variant"),
                                        Col("pattern_label", "pattern"), Col("causal", "causal", fmt_bool),
                                        Col("pass", "pass"), Col("seq_len", "N", fmt_text, True),
                                        Col("time_ms", "time median (ms)", fmt_num, True),
                                        Col("time_iqr_ms", "time IQR (ms)", fmt_num, True),
                                        Col("time_n_samples", "samples", fmt_text, True),
                                        Col("flags_text", "flags"), Col("repro", "measure it again")],
                                table_id="flagged-table"),
        "n_flagged": len(flagged),
        "trust_assessed": bool(prep.loc[prep["status"] == "ok", "time_trusted"].notna().any()),
        "failure_reasons": html_table(failure_reasons(prep), [
            *series_col, Col("variant", "variant"), Col("status", "status"), Col("reason", "reason"),
            Col("cells", "cells", fmt_text, True), Col("patterns", "patterns"), Col("passes", "passes"),
            Col("seq_lens", "N")]),
        "tidy": html_table(tidy, tidy_cols, table_id="tidy-table"),
        "n_rows": len(prep),
    }


