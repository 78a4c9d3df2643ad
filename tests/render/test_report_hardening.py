"""Issue 10, the report's text and figures: spacing, twin notes, heatmap row heights."""

from __future__ import annotations

import re

from harness.render.cell_tables import worst_errors
from harness.render.figures import figure_png, plot_baseline_heatmap
from harness.render.prepare import prepare
from harness.render.report import build_report
from harness.render.scaling import relative_to_baseline
from harness.store.schema import rows_to_frame


def test_units_sentence_is_spaced_and_twin_note_names_what_is_smaller(tmp_path, make_row, write_fixture_run):
    rows = [make_row("naive", 4096, time_s=1e-3, mem=1e6),
            make_row("chunked", 4096, time_s=2e-3, mem=1e5, rel_error=1e-5, twin=True)]
    for r in rows:
        r.update(heads=8, error_seq_len=4096, error_heads=2, error_batch=1)
    run = write_fixture_run(tmp_path / "run", rows, run_id="run-a")
    out, _ = build_report([run], out=tmp_path / "r.html", baseline="naive")
    html = out.read_text()
    assert re.search(r"<strong>naive</strong>\. Units:", html)
    assert "on a smaller twin (heads = 2 instead of 8)" in html
    assert "(N = 4096)" not in html
    errs = worst_errors(prepare(rows_to_frame(rows))).set_index("variant")
    assert errs.loc["chunked", "error_heads"] == 2 and errs.loc["chunked", "heads"] == 8


def test_heatmap_rows_have_one_height_whatever_the_panel(make_row):
    """fwd has four variant rows, fwd_bwd one (the others are unsupported there): the one row is not
    stretched to the height of four, and the figure is sized by the rows it shows."""
    rows = []
    for n in (256, 512):
        for pass_ in ("fwd", "fwd_bwd"):
            for v in ("naive", "chunked", "local", "flex", "sdpa"):
                ok = pass_ == "fwd" or v in ("naive", "chunked")
                rows.append(make_row(v, n, pass_=pass_, time_s=1e-9 * n * n * (1 + len(v) / 5), mem=8.0 * n * n,
                                     status="ok" if ok else "unsupported", reason="" if ok else "no backward"))
    fig = plot_baseline_heatmap(relative_to_baseline(prepare(rows_to_frame(rows)), "naive"), "speedup", "naive", "s")
    figure_png(fig)  # lays the figure out
    per_row = [ax.get_window_extent().height / abs(ax.get_ylim()[0] - ax.get_ylim()[1]) for ax in fig.axes]
    assert len(per_row) == 2 and abs(per_row[0] - per_row[1]) < 0.05 * per_row[0]
    assert fig.get_size_inches()[1] < 4.0  # 5 row labels in all, not 2 panels x 4 rows
