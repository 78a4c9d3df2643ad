"""Report tables, plots and HTML on fixture frames and fixture run folders (no measurement, except the
one small `attnbench run` end-to-end test)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from harness import plots
from harness.results import RUN_JSON, SCHEMA_VERSION, rows_to_frame, write_json, write_tables

EVIL_VARIANT = "<script>alert(1)</script>"
EVIL_REASON = "needs <b>bold</b> hardware & more"


def make_row(variant, n, *, pattern="global", causal=False, pass_="fwd", status="ok", time_s=None, mem=None,
             reason="", run_id="run-a", device="cpu", dtype="float32", rel_error=1e-6, twin=False):
    """One tidy row as the runner writes it; metrics are None unless status is ok."""
    ok = status == "ok"
    flops = 4.0 * 4 * 64 * n * n
    row = {"run_id": run_id, "case_id": f"{variant}/{pattern}/{causal}/{n}/{pass_}/{dtype}", "variant": variant,
           "pattern": pattern, "causal": causal, "window": 64 if pattern == "local" else None,
           "segment": max(1, round(math.sqrt(n))) if pattern == "hierarchical" else None, "device": device,
           "dtype": dtype, "batch": 1, "heads": 4, "seq_len": n, "head_dim": 64, "pass": pass_, "params": "{}",
           "status": status, "reason": reason, "flops": flops, "isolated": False, "wall_s": 0.1,
           "finished_at": 1.8e9}
    if ok:
        row.update(time_s_median=time_s, time_s_iqr=time_s / 20, time_s_min=time_s * 0.9, time_s_max=time_s * 1.2,
                   time_n_samples=5, time_number_per_sample=1, time_noisy=False, peak_mem_bytes=int(mem),
                   peak_mem_method="fake", flops_per_s=flops / time_s, ceiling_flops_per_s=2e11,
                   ceiling_fraction=flops / time_s / 2e11, rel_error=rel_error, error_seq_len=min(n, 512),
                   error_batch=1, error_heads=4, error_on_twin=twin, setup_s=0.0,
                   time_samples_s=[time_s] * 5)
    return row


def scaling_rows(ns=(256, 512, 1024, 2048), run_id="run-a", device="cpu", dtype="float32", speed=1.0):
    """naive: time ~ N^2 and memory ~ N^2; local: time and memory ~ N, slower than naive below N = 1024;
    naive runs out of memory at the largest N when there are four sizes; xformers is unsupported."""
    rows = []
    for n in ns:
        for pattern in ("global", "local"):
            big = len(ns) >= 4 and n == ns[-1]
            rows.append(make_row("naive", n, pattern=pattern, time_s=1e-9 * n * n / speed, mem=8.0 * n * n,
                                 run_id=run_id, device=device, dtype=dtype, rel_error=2e-6 if n == 512 else 1e-6,
                                 status="oom" if big and pattern == "global" else "ok",
                                 reason="OutOfMemoryError: tried to allocate 4 GiB" if big else ""))
            if pattern == "local":
                rows.append(make_row("local", n, pattern=pattern, time_s=6e-7 * n / speed, mem=4096.0 * n,
                                     run_id=run_id, device=device, dtype=dtype, rel_error=3e-6,
                                     twin=n > 512))
            rows.append(make_row("xformers", n, pattern=pattern, status="unsupported", run_id=run_id,
                                 device=device, dtype=dtype, reason="device=cpu (supported: cuda)"))
    return rows


def write_fixture_run(run_dir: Path, rows: list[dict], run_id: str | None = None, device: str = "cpu",
                      status: str = "complete") -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_tables(run_dir, rows)
    variants = sorted({r["variant"] for r in rows})
    write_json(run_dir / RUN_JSON, {
        "schema_version": SCHEMA_VERSION, "run_id": run_id or run_dir.name, "status": status,
        "started_at": 1.8e9, "finished_at": 1.8e9 + 95, "counts": {},
        "provenance": {"git_commit": "0" * 40, "git_dirty": False, "torch_version": "2.13.0+cpu",
                       "device": device, "device_name": "Fixture CPU", "python_version": "3.11.7"},
        "sweep": {"device": device, "variants": variants, "patterns": ["global", "local"],
                  "seq_lens": sorted({r["seq_len"] for r in rows}), "window": 64, "name": "fixture"},
        "calibration": [{"when": "start", "kernel": "matmul_f32_512", "device": device, "time_s_median": 1e-3,
                         "time_s_iqr": 1e-5, "samples_s": [1e-3], "at": 1.8e9},
                        {"when": "end", "kernel": "matmul_f32_512", "device": device, "time_s_median": 1.1e-3,
                         "time_s_iqr": 1e-5, "samples_s": [1.1e-3], "at": 1.8e9 + 95}],
        "ceilings_flops_per_s": {"float32": 2e11},
    })
    return run_dir


@pytest.fixture(scope="module")
def prep():
    return plots.prepare(rows_to_frame(scaling_rows()))


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
    exps = plots.fit_exponents(prep).set_index(["variant", "pattern"])
    assert exps.loc[("naive", "local"), "time_exponent"] == pytest.approx(2.0, abs=1e-6)
    assert exps.loc[("naive", "local"), "mem_exponent"] == pytest.approx(2.0, abs=1e-6)
    assert exps.loc[("local", "local"), "time_exponent"] == pytest.approx(1.0, abs=1e-6)
    assert exps.loc[("local", "local"), "mem_exponent"] == pytest.approx(1.0, abs=1e-6)
    assert exps.loc[("local", "local"), "range"] == "N = 256..2048 (4 points)"
    # naive ran out of memory at N = 2048 for the global pattern: the fit covers what ran, and says so.
    assert exps.loc[("naive", "global"), "range"] == "N = 256..1024 (3 points)"
    assert "2048" in exps.loc[("naive", "global"), "note"]
    assert ("xformers", "global") not in exps.index  # never ran: nothing to fit


def test_exponents_with_a_single_sequence_length_are_na_not_a_crash():
    one = plots.prepare(rows_to_frame(scaling_rows(ns=(512,))))
    exps = plots.fit_exponents(one)
    assert len(exps) and exps["time_exponent"].isna().all() and exps["mem_exponent"].isna().all()
    assert (exps["range"] == "N = 512 only").all() and exps["note"].str.contains("n/a").all()
    assert plots.fmt_exp(exps["time_exponent"].iloc[0]) == "n/a"
    assert plots.crossovers(one).empty


def test_crossover_says_from_which_n_a_variant_is_faster(prep):
    cross = plots.crossovers(prep)
    local = cross[cross["pattern"] == "local"]
    assert local["text"].tolist() == ["local is faster than naive from N = 1024 (slower at N = 512)"]
    assert local["from_n"].tolist() == [1024]


def test_speedup_and_memory_saving_relative_to_baseline(prep):
    rel = plots.relative_to_baseline(prep, "naive")
    assert set(rel["variant"]) == {"local", "xformers"}
    at = rel[(rel["variant"] == "local") & (rel["seq_len"] == 2048)].iloc[0]
    assert at["speedup"] == pytest.approx((1e-9 * 2048 * 2048) / (6e-7 * 2048))
    assert at["memory_saving"] == pytest.approx(8.0 * 2048 / 4096)
    unsupported = rel[rel["variant"] == "xformers"]
    assert unsupported["speedup"].isna().all() and (unsupported["status"] == "unsupported").all()
    assert plots.relative_to_baseline(prep, "no-such-variant").empty


def test_worst_error_and_twin_note(prep):
    errs = plots.worst_errors(prep).set_index(["variant", "pattern"])
    assert errs.loc[("naive", "global"), "rel_error"] == pytest.approx(2e-6)
    assert errs.loc[("naive", "global"), "seq_len"] == 512
    assert errs.loc[("local", "local"), "twins"] == 2


def test_failures_and_status_counts(prep):
    fails = plots.failures(prep)
    assert set(fails["status"]) == {"oom", "unsupported"}
    assert (fails["reason"] != "").all()
    grouped = plots.failure_reasons(prep).set_index("variant")
    assert grouped.loc["xformers", "cells"] == 8 and grouped.loc["xformers", "seq_lens"] == "256, 512, 1024, 2048"
    assert grouped.loc["naive", "status"] == "oom" and grouped.loc["naive", "patterns"] == "global"
    counts = plots.status_counts(prep).set_index("variant")
    assert counts.loc["xformers", "unsupported"] == 8 and counts.loc["naive", "oom"] == 1
    assert counts.loc["naive", "total"] == 8


def test_ceiling_summary_reports_the_best_fraction(prep):
    ceil = plots.ceiling_summary(prep)
    assert len(ceil) == 3 and (ceil["ceiling_pct"] > 0).all()
    assert ceil["ceiling_gflop_per_s"].tolist() == pytest.approx([200.0] * 3)


# ---- figures ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ns", [(256, 512, 1024, 2048), (512,)], ids=["several-n", "single-n"])
def test_figures_render_to_png(ns):
    from matplotlib.figure import Figure

    p = plots.prepare(rows_to_frame(scaling_rows(ns=ns)))
    figs = [plots.plot_vs_n(p, "time_ms", "time (ms)", "time"), plots.plot_vs_n(p, "peak_mem_mib", "MiB", "mem"),
            plots.plot_ceiling(p, "ceiling"),
            plots.plot_baseline_heatmap(plots.relative_to_baseline(p, "naive"), "speedup", "naive", "speedup")]
    for fig in figs:
        assert isinstance(fig, Figure)
        assert plots.figure_png(fig, dpi=40).startswith(b"\x89PNG")


def test_figures_of_a_frame_where_nothing_ran():
    rows = [make_row(v, n, status=s, reason="nope") for v, s in (("naive", "error"), ("local", "timeout"))
            for n in (256, 512)]
    p = plots.prepare(rows_to_frame(rows))
    for fig in (plots.plot_vs_n(p, "time_ms", "ms", "t"),
                plots.plot_baseline_heatmap(plots.relative_to_baseline(p, "naive"), "speedup", "naive", "s")):
        assert plots.figure_png(fig, dpi=40).startswith(b"\x89PNG")
    assert plots.fit_exponents(p).empty and plots.crossovers(p).empty and plots.worst_errors(p).empty


def test_plot_functions_leave_no_pyplot_figures_behind(prep):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.plot_vs_n(prep, "time_ms", "ms", "t")
    assert plt.get_fignums() == before


# ---- HTML -------------------------------------------------------------------------------------
def test_html_table_escapes_every_cell_and_header():
    df = pd.DataFrame({"variant": [EVIL_VARIANT], "reason": [EVIL_REASON], "x": [1.5]})
    html = str(plots.html_table(df, [plots.Col("variant", "<i>v</i>"), plots.Col("reason", "reason"),
                                     plots.Col("x", "x", plots.fmt_num, True)]))
    assert "<script>" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert 'data-v="1.5"' in html


def _evil_rows():
    rows = scaling_rows()
    rows += [make_row(EVIL_VARIANT, n, time_s=1e-3, mem=1e6) for n in (256, 2048)]
    rows.append(make_row("sdpa_cudnn", 256, status="error", reason=EVIL_REASON))
    return rows


def test_report_end_to_end_escapes_and_writes_the_index(tmp_path):
    from harness.report import build_report

    run = write_fixture_run(tmp_path / "runs" / "run-evil", _evil_rows())
    root = tmp_path / "reports"
    out, index = build_report([run], reports_root=root)
    assert out == root / "run-evil" / "index.html" and out.is_file()
    html = out.read_text()
    assert EVIL_VARIANT not in html and "<b>bold" not in html
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


def test_index_lists_every_report_and_single_n_report_works(tmp_path):
    from harness.report import build_report

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


def test_report_of_an_interrupted_run_with_no_rows(tmp_path):
    from harness.report import build_report

    run = write_fixture_run(tmp_path / "empty-run", [], status="interrupted")
    (run / "results.parquet").unlink()
    out, _ = build_report([run], reports_root=tmp_path / "reports")
    html = out.read_text()
    assert "interrupted" in html and "attnbench sweep --resume" in html


def test_importing_the_report_modules_imports_no_plotting_or_templates():
    import subprocess
    import sys

    code = ("import sys, harness.report, harness.plots; "
            "print(sorted(m for m in ('matplotlib', 'seaborn', 'jinja2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_report_name_derives_from_run_ids():
    from harness.report import report_name

    assert report_name(["20261127T210501Z-quick-1"]) == "20261127T210501Z-quick-1"
    assert report_name(["a", "b"]) == "a__vs__b"
    assert report_name(["x/../y"]) == "x-..-y"
    assert len(report_name(["r" * 80, "s" * 80])) < 120


# ---- command line -----------------------------------------------------------------------------
def test_cli_report_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from harness.cli import main

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


def test_cli_report_writes_and_prints_paths(tmp_path, capsys):
    from harness.cli import main

    run = write_fixture_run(tmp_path / "run", scaling_rows(ns=(256, 512)))
    out = tmp_path / "reports" / "mine" / "index.html"
    assert main(["report", str(run), "-o", str(out), "--baseline", "local"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and str(tmp_path / "reports" / "index.html") in printed
    assert "Speedup over local" in out.read_text() or "Relative to local" in out.read_text()


def test_cli_run_sweeps_then_reports(tmp_path, capsys):
    from harness.cli import main

    rc = main(["run", "--variants", "naive,local", "--patterns", "local", "--causal", "no", "--passes", "fwd",
               "--seq-lens", "64,128", "--heads", "1", "--budget-s", "0.01", "--window", "16", "--quiet",
               "--out", str(tmp_path / "run"), "--reports-root", str(tmp_path / "reports")])
    assert rc == 0
    printed = capsys.readouterr().out
    report = tmp_path / "reports" / "run" / "index.html"
    assert f"results: {tmp_path / 'run'}" in printed and str(report) in printed
    html = report.read_text()
    assert "naive" in html and "local" in html and (tmp_path / "reports" / "index.html").is_file()
