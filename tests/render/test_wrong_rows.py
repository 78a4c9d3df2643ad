"""A wrong row (its output is not what its pattern defines) in the report: left out of every fit,
crossover, speedup and ceiling, drawn as wrong, counted and listed with its reason; suspicious speedups
flagged. Fixture frames only; nothing is timed."""

import json

import numpy as np
import pandas as pd
import pytest

from harness.analysis.scaling import baseline_ratios, exponent_fits, order_changes
from harness.analysis.suspicious import suspicious_speedups
from harness.core.names import STATUSES
from harness.render.cell_tables import ceiling_summary, failures, status_counts, worst_errors
from harness.render.figures import WRONG_LABEL, plot_baseline_heatmap, plot_vs_n
from harness.render.prepare import prepare, wrong_values
from harness.render.roofline import plot_roofline
from harness.render.scaling import crossovers, fit_exponents, relative_to_baseline
from harness.render.suspicious import suspicious_section, suspicious_table

REASON = "returned 4096 non-finite value(s) of 4096 (nan or inf)"


def wrong_row(make_row, variant, n, time_s, rel_error=None, **kw):
    """A row as fidelity leaves it: timed and measured, then judged wrong (its figures kept)."""
    row = make_row(variant, n, time_s=time_s, mem=1e6, rel_error=rel_error, **kw)
    row.update(status="wrong", reason=REASON)
    return row


@pytest.fixture
def rows(scaling_rows, make_row):
    # "cheat" is wrong at every N and 1000x faster than anything: it must never count
    out = scaling_rows()
    out += [wrong_row(make_row, "cheat", n, 1e-9) for n in (256, 512, 1024, 2048)]
    out += [wrong_row(make_row, "local", 2048, 1e-9, rel_error=0.5, pattern="local")]
    out = [r for r in out if not (r["variant"] == "local" and r["seq_len"] == 2048 and r["status"] == "ok")]
    return out


@pytest.fixture
def prep(rows):
    return prepare(pd.DataFrame(rows))


def test_wrong_cells_keep_their_time_for_drawing_only(prep):
    wrong = prep["status"] == "wrong"
    assert prep.loc[wrong, "time_ms"].isna().all()  # never a measurement
    assert np.isfinite(wrong_values(prep, "time_ms")[wrong.to_numpy()]).all()
    assert np.isnan(wrong_values(prep, "time_ms")[~wrong.to_numpy()]).all()


def test_fits_crossovers_and_speedups_leave_wrong_cells_out_and_say_so(prep):
    fits = fit_exponents(prep).set_index(["variant", "pattern"])
    assert "cheat" not in fits.index.get_level_values("variant")
    local = fits.loc[("local", "local")]
    assert local["n_max"] == 1024 and "1 wrong cell (N = 2048) left out" in local["note"]
    raw = exponent_fits(prep, ["variant", "pattern"]).set_index(["variant", "pattern"])
    assert raw.loc[("local", "local"), "wrong_ns"] == [2048]
    assert not {"cheat"} & {*order_changes(prep, ["pattern"])["faster"], *crossovers(prep)["slower"]}
    rel = relative_to_baseline(prep, "naive")
    cheat = rel[rel["variant"] == "cheat"]
    assert len(cheat) == 4 and cheat["speedup"].isna().all() and set(cheat["status"]) == {"wrong"}
    base = baseline_ratios(prep.assign(variant=prep["variant"].replace({"cheat": "base"})), "base",
                           ["pattern", "seq_len"])
    against_wrong = base["baseline_status"] == "wrong"
    assert against_wrong.any() and base.loc[against_wrong, "speedup"].isna().all()
    assert "cheat" not in set(ceiling_summary(prep)["variant"])


def test_wrong_cells_are_counted_and_listed_with_their_reason(prep):
    counts = status_counts(prep).set_index("variant")
    assert list(counts.columns[1:7]) == list(STATUSES)
    assert counts.loc["cheat", "wrong"] == 4 and counts.loc["local", "wrong"] == 1
    fails = failures(prep)
    assert (fails.loc[fails["status"] == "wrong", "reason"] == REASON).all() and (fails["status"] == "wrong").sum() == 5
    errs = worst_errors(prep).set_index(["variant", "pattern"])
    assert errs.loc[("local", "local"), "rel_error"] == 0.5 and errs.loc[("local", "local"), "wrong"] == 1
    assert errs.loc[("cheat", "global"), "rel_error"] == np.inf  # a non-finite output: the worst there is


def _legend_labels(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def _marker_points(fig, marker):
    return sum(len(line.get_xdata()) for ax in fig.axes for line in ax.get_lines() if line.get_marker() == marker)


def test_plots_draw_wrong_cells_apart_with_a_legend_entry(prep):
    fig = plot_vs_n(prep, "time_ms", "time (ms)", "time")
    assert WRONG_LABEL in _legend_labels(fig) and "cheat" in _legend_labels(fig)
    assert _marker_points(fig, "X") == 5
    clean = plot_vs_n(prep[prep["status"] != "wrong"], "time_ms", "time (ms)", "time")
    assert WRONG_LABEL not in _legend_labels(clean) and _marker_points(clean, "X") == 0
    only_wrong = plot_vs_n(prep[prep["variant"] == "cheat"], "time_ms", "time (ms)", "time")
    assert _marker_points(only_wrong, "X") == 4  # drawn, not "no ok cells"
    heat = plot_baseline_heatmap(relative_to_baseline(prep, "naive"), "speedup", "naive", "speedup")
    texts = [t.get_text() for ax in heat.axes for t in ax.texts]
    assert texts.count("wrong") == 5
    roof = plot_roofline(pd.DataFrame([{**r, "bytes": 1e6} for r in prep.to_dict("records")]))
    assert any("wrong output" in t for t in [x.get_text() for lg in roof.legends for x in lg.get_texts()])


def test_suspicious_speedups_flag_more_than_10x_over_the_best_other(make_row):
    rows = [make_row("a", 256, time_s=1e-4, mem=1), make_row("b", 256, time_s=2e-3, mem=1),
            make_row("c", 256, time_s=5e-3, mem=1), make_row("a", 512, time_s=1e-3, mem=1),
            make_row("b", 512, time_s=2e-3, mem=1), wrong_row(make_row, "w", 512, 1e-7)]
    frame = pd.DataFrame(rows)
    flags = suspicious_speedups(frame, ["pattern", "seq_len"])
    assert flags[["variant", "other_variant", "seq_len"]].values.tolist() == [["a", "b", 256]]
    assert flags["ratio"].iloc[0] == pytest.approx(20.0)
    assert suspicious_speedups(frame, ["pattern", "seq_len"], factor=25).empty
    prep = prepare(frame)
    table = suspicious_table(prep)
    assert table["text"].iloc[0].startswith("a is 20x faster than b, the best other variant, on global fwd at N = 256")
    section = suspicious_section(prep)
    assert section["n_suspicious"] == 1 and "<table" in section["suspicious"] and "10x" in section["suspicious_intro"]
    assert suspicious_section(prepare(frame[frame["seq_len"] == 512]))["n_suspicious"] == 0  # w is wrong: no contender


def test_report_of_a_run_with_wrong_rows(tmp_path, write_fixture_run, rows):
    from harness.render.report import build_report, load_runs

    path = write_fixture_run(tmp_path / "runs" / "with-wrong", rows)
    out, _ = build_report([path], reports_root=tmp_path / "reports")
    page = out.read_text()
    assert REASON in page and ">wrong<" in page
    (df, meta, _), = load_runs([path])
    assert set(df["status"]) >= {"wrong"} and json.dumps(meta)
