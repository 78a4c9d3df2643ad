"""Report tables, plots and HTML on fixture frames and fixture run folders (no measurement, except the
one small `attnbench run` end-to-end test)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from harness.render.cell_tables import (
    ceiling_summary,
    failure_reasons,
    failures,
    status_counts,
    worst_errors,
)
from harness.render.figures import (
    figure_png,
    plot_baseline_heatmap,
    plot_ceiling,
    plot_vs_n,
)
from harness.render.prepare import prepare
from harness.render.report import build_report, report_name
from harness.render.scaling import crossovers, fit_exponents, relative_to_baseline
from harness.render.tables import Col, html_table
from harness.render.units import fmt_exp, fmt_num
from harness.store.schema import rows_to_frame


@pytest.fixture(scope="module")
def prep(scaling_rows):
    return prepare(rows_to_frame(scaling_rows()))


# ---- derived tables ---------------------------------------------------------------------------
def test_prepare_chooses_report_units_and_leaves_failed_cells_empty(prep):
    ok = prep[(prep["variant"] == "naive") & (prep["seq_len"] == 256) & (prep["pattern"] == "global")].iloc[0]
    assert ok["time_ms"] == pytest.approx(1e-9 * 256 * 256 * 1e3)
    assert ok["peak_mem_mib"] == pytest.approx(8.0 * 256 * 256 / 2**20)
    assert ok["pattern_label"] == "global" and ok["series"] == "run-a" and ok["shape"] == "B=1 H=4 D=64"
    local = prep[prep["pattern"] == "local"].iloc[0]
    assert local["pattern_label"] == "local (w=64)"
    bad = prep[prep["status"] != "ok"]
    assert len(bad) and bad[["time_ms", "peak_mem_mib", "gflop_per_s", "ceiling_pct"]].isna().all().all()


def test_exponents_fit_the_slopes_and_state_the_range(prep):
    exps = fit_exponents(prep).set_index(["variant", "pattern"])
    assert exps.loc[("naive", "local"), "time_exponent"] == pytest.approx(2.0, abs=1e-6)
    assert exps.loc[("naive", "local"), "mem_exponent"] == pytest.approx(2.0, abs=1e-6)
    assert exps.loc[("local", "local"), "time_exponent"] == pytest.approx(1.0, abs=1e-6)
    assert exps.loc[("local", "local"), "mem_exponent"] == pytest.approx(1.0, abs=1e-6)
    assert exps.loc[("local", "local"), "range"] == "N = 256..2048 (4 points)"
    # naive ran out of memory at N = 2048 for the global pattern: the fit covers what ran, and says so.
    assert exps.loc[("naive", "global"), "range"] == "N = 256..1024 (3 points)"
    assert "2048" in exps.loc[("naive", "global"), "note"]
    assert ("xformers", "global") not in exps.index  # never ran: nothing to fit


def test_exponents_with_a_single_sequence_length_are_na_not_a_crash(scaling_rows):
    one = prepare(rows_to_frame(scaling_rows(ns=(512,))))
    exps = fit_exponents(one)
    assert len(exps) and exps["time_exponent"].isna().all() and exps["mem_exponent"].isna().all()
    assert (exps["range"] == "N = 512 only").all() and exps["note"].str.contains("n/a").all()
    assert fmt_exp(exps["time_exponent"].iloc[0]) == "n/a"
    assert crossovers(one).empty


def test_crossover_says_from_which_n_a_variant_is_faster(prep):
    cross = crossovers(prep)
    local = cross[cross["pattern"] == "local"]
    assert local["text"].tolist() == ["local is faster than naive from N = 1024 (slower at N = 512)"]
    assert local["from_n"].tolist() == [1024]


def test_speedup_and_memory_saving_relative_to_baseline(prep):
    rel = relative_to_baseline(prep, "naive")
    assert set(rel["variant"]) == {"local", "xformers"}
    at = rel[(rel["variant"] == "local") & (rel["seq_len"] == 2048)].iloc[0]
    assert at["speedup"] == pytest.approx((1e-9 * 2048 * 2048) / (6e-7 * 2048))
    assert at["memory_saving"] == pytest.approx(8.0 * 2048 / 4096)
    unsupported = rel[rel["variant"] == "xformers"]
    assert unsupported["speedup"].isna().all() and (unsupported["status"] == "unsupported").all()
    assert relative_to_baseline(prep, "no-such-variant").empty


def test_worst_error_and_twin_note(prep):
    errs = worst_errors(prep).set_index(["variant", "pattern"])
    assert errs.loc[("naive", "global"), "rel_error"] == pytest.approx(2e-6)
    assert errs.loc[("naive", "global"), "seq_len"] == 512
    assert errs.loc[("local", "local"), "twins"] == 2


def test_failures_and_status_counts(prep):
    fails = failures(prep)
    assert set(fails["status"]) == {"oom", "unsupported"}
    assert (fails["reason"] != "").all()
    grouped = failure_reasons(prep).set_index("variant")
    assert grouped.loc["xformers", "cells"] == 8 and grouped.loc["xformers", "seq_lens"] == "256, 512, 1024, 2048"
    assert grouped.loc["naive", "status"] == "oom" and grouped.loc["naive", "patterns"] == "global"
    counts = status_counts(prep).set_index("variant")
    assert counts.loc["xformers", "unsupported"] == 8 and counts.loc["naive", "oom"] == 1
    assert counts.loc["naive", "total"] == 8


def test_ceiling_summary_reports_the_best_fraction(prep):
    ceil = ceiling_summary(prep)
    assert len(ceil) == 3 and (ceil["ceiling_pct"] > 0).all()
    assert ceil["ceiling_gflop_per_s"].tolist() == pytest.approx([200.0] * 3)


# ---- figures ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ns", [(256, 512, 1024, 2048), (512,)], ids=["several-n", "single-n"])
def test_figures_render_to_png(ns, scaling_rows):
    from matplotlib.figure import Figure

    p = prepare(rows_to_frame(scaling_rows(ns=ns)))
    figs = [plot_vs_n(p, "time_ms", "time (ms)", "time"), plot_vs_n(p, "peak_mem_mib", "MiB", "mem"),
            plot_ceiling(p, "ceiling"),
            plot_baseline_heatmap(relative_to_baseline(p, "naive"), "speedup", "naive", "speedup")]
    for fig in figs:
        assert isinstance(fig, Figure)
        assert figure_png(fig, dpi=40).startswith(b"\x89PNG")


def test_figures_of_a_frame_where_nothing_ran(make_row):
    rows = [make_row(v, n, status=s, reason="nope") for v, s in (("naive", "error"), ("local", "timeout"))
            for n in (256, 512)]
    p = prepare(rows_to_frame(rows))
    for fig in (plot_vs_n(p, "time_ms", "ms", "t"),
                plot_baseline_heatmap(relative_to_baseline(p, "naive"), "speedup", "naive", "s")):
        assert figure_png(fig, dpi=40).startswith(b"\x89PNG")
    assert fit_exponents(p).empty and crossovers(p).empty and worst_errors(p).empty


def test_plot_functions_leave_no_pyplot_figures_behind(prep):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_vs_n(prep, "time_ms", "ms", "t")
    assert plt.get_fignums() == before


# ---- HTML -------------------------------------------------------------------------------------
def test_html_table_escapes_every_cell_and_header(evil_variant, evil_reason):
    df = pd.DataFrame({"variant": [evil_variant], "reason": [evil_reason], "x": [1.5]})
    html = str(html_table(df, [Col("variant", "<i>v</i>"), Col("reason", "reason"),
                               Col("x", "x", fmt_num, True)]))
    assert "<script>" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert 'data-v="1.5"' in html


def test_report_end_to_end_escapes_and_writes_the_index(tmp_path, write_fixture_run, evil_rows, evil_variant):
    run = write_fixture_run(tmp_path / "runs" / "run-evil", evil_rows())
    root = tmp_path / "reports"
    out, index = build_report([run], reports_root=root)
    assert out == root / "run-evil" / "index.html" and out.is_file()
    html = out.read_text()
    assert evil_variant not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert html.count("<script>") == 1  # the page's own sort script, nothing else
    # self-contained: images inline, no external scripts, styles or fonts
    assert re.findall(r'<img [^>]*src="data:image/png;base64,', html)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    for text in ("time exponent", "local is faster than naive from N = 1024", "OutOfMemoryError",
                 "device=cpu (supported: cuda)", "Fixture CPU", "matmul_f32_512"):
        assert text in html
    assert index == root / "index.html"
    listing = index.read_text()
    assert 'href="run-evil/index.html"' in listing and "&lt;script&gt;" in listing


def test_index_lists_every_report_and_single_n_report_works(tmp_path, write_fixture_run, scaling_rows):
    a = write_fixture_run(tmp_path / "a", scaling_rows(ns=(512,), run_id="a"))
    b = write_fixture_run(tmp_path / "b", scaling_rows(ns=(256, 512), run_id="b", device="cuda",
                                                        dtype="float16", speed=10.0), device="cuda")
    root = tmp_path / "reports"
    out_a, _ = build_report([a], reports_root=root)
    assert "n/a" in out_a.read_text()
    out_ab, index = build_report([a, b], out=root / "cpu-vs-cuda" / "index.html")
    html = out_ab.read_text()
    assert "a / cpu / float32" in html and "b / cuda / float16" in html  # side by side, one series each
    listing = index.read_text()
    assert 'href="a/index.html"' in listing and 'href="cpu-vs-cuda/index.html"' in listing


def test_report_of_an_interrupted_run_with_no_rows(tmp_path, write_fixture_run):
    run = write_fixture_run(tmp_path / "empty-run", [], status="interrupted")
    (run / "results.parquet").unlink()
    out, _ = build_report([run], reports_root=tmp_path / "reports")
    html = out.read_text()
    assert "interrupted" in html and "attnbench sweep --resume" in html


def test_importing_the_report_modules_imports_no_plotting_or_templates():
    import subprocess
    import sys

    code = ("import sys, harness.render.report, harness.render.context, harness.render.figures, "
            "harness.render.index, harness.cli.report; "
            "print(sorted(m for m in ('matplotlib', 'seaborn', 'jinja2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_report_name_derives_from_run_ids():
    assert report_name(["20261127T210501Z-quick-1"]) == "20261127T210501Z-quick-1"
    assert report_name(["a", "b"]) == "a__vs__b"
    assert report_name(["x/../y"]) == "x-..-y"
    assert len(report_name(["r" * 80, "s" * 80])) < 120


# ---- command line -----------------------------------------------------------------------------
def test_cli_report_bad_input_is_one_line_and_exit_2(tmp_path, capsys, write_fixture_run, scaling_rows):
    from harness.cli.main import main

    missing = tmp_path / "nope"
    assert main(["report", str(missing), "--reports-root", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "hint" in err and len(err.strip().splitlines()) == 1
    not_run = tmp_path / "empty"
    not_run.mkdir()
    assert main(["report", str(not_run), "--reports-root", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(not_run) in err and "hint" in err
    run = write_fixture_run(tmp_path / "run", scaling_rows(ns=(256, 512)))
    assert main(["report", str(run), "--baseline", "nosuch", "--reports-root", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "naive" in err
    assert main(["report", str(run), str(run), "--reports-root", str(tmp_path / "r")]) == 2
    assert "twice" in capsys.readouterr().err
    assert main(["report", str(run), "-o", str(tmp_path / "r")]) == 2
    assert ".html" in capsys.readouterr().err


def test_cli_report_writes_and_prints_paths(tmp_path, capsys, write_fixture_run, scaling_rows):
    from harness.cli.main import main

    run = write_fixture_run(tmp_path / "run", scaling_rows(ns=(256, 512)))
    out = tmp_path / "reports" / "mine" / "index.html"
    assert main(["report", str(run), "-o", str(out), "--baseline", "local"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and str(tmp_path / "reports" / "index.html") in printed
    assert "Speedup over local" in out.read_text() or "Relative to local" in out.read_text()


def test_cli_run_sweeps_then_reports(tmp_path, capsys):
    from harness.cli.main import main

    rc = main(["run", "--variants", "naive,local", "--patterns", "local", "--causal", "no", "--passes", "fwd",
               "--seq-lens", "64,128", "--heads", "1", "--budget-s", "0.01", "--window", "16", "--quiet",
               "--out", str(tmp_path / "run"), "--reports-root", str(tmp_path / "reports")])
    assert rc == 0
    printed = capsys.readouterr().out
    report = tmp_path / "reports" / "run" / "index.html"
    assert f"results: {tmp_path / 'run'}" in printed and str(report) in printed
    html = report.read_text()
    assert "naive" in html and "local" in html and (tmp_path / "reports" / "index.html").is_file()
