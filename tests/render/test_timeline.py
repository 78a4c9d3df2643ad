"""The machine during a run: calibration and host load of each cell against the seconds since
the run started, the run's calibrations and the slow / busy thresholds, flagged cells hollow, the
ceilings measured during the run in the title; a run written before the per-cell evidence says so.
Fixture frames and run folders only; nothing is measured."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest

from harness.analysis.trust import HOST_BUSY, SLOW_CALIBRATION
from harness.render.report import build_report, load_runs
from harness.render.timeline import NO_EVIDENCE, ceilings_text, plot_timeline
from harness.store.journal import write_json
from harness.store.schema import RUN_JSON, rows_to_frame

START = 1.8e9
META = {"run_id": "run-m", "started_at": START,
        "calibration": [{"when": "start", "time_s_median": 1.0e-3, "at": START + 1},
                        {"when": "end", "time_s_median": 1.1e-3, "at": START + 95},
                        {"when": "start", "error": "RuntimeError: no device", "at": START + 2}],  # no time: skipped
        "ceilings_measured": [{"when": "start", "at": START + 1, "float32": 2.0e11, "bandwidth_bytes_per_s": 4.0e10},
                              {"when": "end", "at": START + 95, "float32": 1.5e11, "bandwidth_bytes_per_s": 3.9e10}]}


def with_evidence(rows: list[dict]) -> list[dict]:
    """The ok rows finish 10 s apart with a calibration and host load beside each; the third is slow
    (calibration 1.5 ms, flagged) and the fifth ran on a busy host (0.6, flagged); the rest are trusted."""
    out, k = [], 0
    for r in rows:
        if r["status"] != "ok":
            out.append({**r, "time_trusted": None, "time_flags": ""})
            continue
        k += 1
        cal, busy = (1.5e-3 if k == 3 else 1.0e-3 + 1e-5 * k), (0.6 if k == 5 else 0.05)
        flags = (["slow machine: ..."] if k == 3 else []) + (["host busy: ..."] if k == 5 else [])
        out.append({**r, "finished_at": START + 10.0 * k, "calibration_s": cal, "host_busy": busy,
                    "time_trusted": not flags, "time_flags": json.dumps(flags) if flags else ""})
    return out


def _markers(ax):
    return [ln for ln in ax.get_lines() if ln.get_marker() not in (None, "None", "")]


def _points(ax, marker="o", hollow=None):
    pts = []
    for ln in _markers(ax):
        if ln.get_marker() != marker or (hollow is not None and (ln.get_markerfacecolor() == "none") != hollow):
            continue
        pts += list(zip(np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)))
    return sorted(pts)


def _hlines(ax):
    return sorted(float(ln.get_ydata()[0]) for ln in ax.get_lines()
                  if ln.get_linestyle() == "--" and len(set(ln.get_ydata())) == 1)


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [fig._suptitle.get_text() if fig._suptitle else ""]


def test_calibration_and_host_load_of_each_cell_against_time_since_start(scaling_rows):
    fig = plot_timeline(rows_to_frame(with_evidence(scaling_rows())), META)
    top, bottom = fig.axes[:2]
    # 11 ok cells, at 10 s, 20 s, ...; the slow (3rd) and busy (5th) ones hollow
    assert [x for x, _ in _points(top)] == [10.0 * k for k in range(1, 12)]
    assert _points(top, hollow=True) == [(30.0, pytest.approx(1.5)), (50.0, pytest.approx(1.05))]
    assert _points(bottom, hollow=True) == [(30.0, 0.05), (50.0, 0.6)]
    assert len(_points(bottom, hollow=False)) == 9
    # the run's calibrations (the entry without a time left out), larger, at their own times
    big = _points(top, marker="D")
    assert big == [(1.0, pytest.approx(1.0)), (95.0, pytest.approx(1.1))]
    # thresholds: 1.15 x the best calibration (1 ms, the run's start), and the host-busy line
    assert _hlines(top) == [pytest.approx(SLOW_CALIBRATION * 1.0)]
    assert _hlines(bottom) == [pytest.approx(HOST_BUSY)]
    assert bottom.get_xlabel() == "time since the run started (s)"
    assert top.get_shared_x_axes().joined(top, bottom)
    title = fig._suptitle.get_text()
    assert "Machine during run run-m" in title
    assert "matmul float32 ceiling at start 200, at end 150 GFLOP/s" in title
    assert "copy bandwidth at start 40, at end 39 GB/s" in title
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "hollow: flagged cell" in labels and "run calibration" in labels


def test_only_ok_cells_are_drawn_and_unflagged_runs_draw_every_marker_filled(scaling_rows):
    rows = [{**r, "time_trusted": True if r["status"] == "ok" else None} for r in with_evidence(scaling_rows())]
    fig = plot_timeline(rows_to_frame(rows), {**META, "calibration": []})
    top, bottom = fig.axes[:2]
    assert len(_points(top)) == len(_points(bottom)) == 11  # oom / unsupported rows carry no evidence
    assert not _points(top, hollow=True) and not _points(top, marker="D")
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "hollow: flagged cell" not in labels
    # with no run-level calibration, the best is the fastest cell's own
    assert _hlines(top) == [pytest.approx(SLOW_CALIBRATION * 1.01)]


def test_a_run_written_before_trust_flags_says_so_instead_of_an_empty_figure(scaling_rows):
    old = rows_to_frame(scaling_rows())  # calibration_s and host_busy all NA
    fig = plot_timeline(old, META)
    assert len(fig.axes) == 1 and not fig.axes[0].axison
    assert any(NO_EVIDENCE in t for t in _texts(fig))
    # an older schema without the columns at all, and a run with no ok cell
    assert any(NO_EVIDENCE in t for t in _texts(plot_timeline(old.drop(columns=["calibration_s", "host_busy",
                                                                                 "time_trusted"]), {})))
    assert any(NO_EVIDENCE in t for t in _texts(plot_timeline(old[old["status"] != "ok"], META)))


def test_a_run_json_without_started_at_counts_from_its_first_record(scaling_rows):
    meta = {k: v for k, v in META.items() if k != "started_at"}
    top = plot_timeline(rows_to_frame(with_evidence(scaling_rows())), meta).axes[0]
    assert _points(top)[0][0] == 9.0 and _points(top, marker="D")[0][0] == 0.0  # the start calibration first


def test_ceilings_text():
    assert ceilings_text(META) == ["matmul float32 ceiling at start 200, at end 150 GFLOP/s",
                                   "copy bandwidth at start 40, at end 39 GB/s"]
    resumed = {"ceilings_measured": [{"when": "start", "at": 1, "float16": 3e12},
                                     {"when": "resume", "at": 2, "float16": 2.9e12, "float32": None}]}
    assert ceilings_text(resumed) == ["matmul float16 ceiling at start 3,000, at resume 2,900 GFLOP/s"]
    assert ceilings_text({}) == [] and ceilings_text({"ceilings_measured": None}) == []


# ---- in the report --------------------------------------------------------------------------------
def _text(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, scaling_rows, write_fixture_run):
    root = tmp_path_factory.mktemp("runs")
    new = write_fixture_run(root / "run-new", with_evidence(scaling_rows()))
    meta = json.loads((new / RUN_JSON).read_text())
    write_json(new / RUN_JSON, {**meta, "ceilings_measured": META["ceilings_measured"]})
    old = write_fixture_run(root / "run-old", scaling_rows())
    return new, old


def _machine_section(page: str) -> str:
    """From the machine heading to the next section heading (or the end of the page)."""
    start = page.index('<h2 id="machine">')
    end = page.find("<h2 ", start + 1)
    return page[start:end if end >= 0 else len(page)]


def test_report_shows_the_machine_during_the_run_after_the_answer_and_the_plots(runs, tmp_path):
    new, _ = runs
    out, _ = build_report([new], out=tmp_path / "one.html")
    page = out.read_text(encoding="utf-8")
    section = _machine_section(page)
    assert page.index('class="trust ') < page.index('<h2 id="answer">') < page.index('<h2 id="shape1">')
    assert page.index('<h2 id="shape1">') < page.index('<h2 id="machine">')
    assert 'href="#machine"' in page
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', section)) == 1
    assert 'alt="calibration and host load over run run-new"' in section
    assert ("Ceilings measured during the run: matmul float32 ceiling at start 200, at end 150 GFLOP/s; "
            "copy bandwidth at start 40, at end 39 GB/s.") in _text(section)


def test_report_of_a_new_and_an_old_run_has_one_timeline_each(runs, tmp_path):
    new, old = runs
    out, _ = build_report([new, old], out=tmp_path / "two.html")
    page = out.read_text(encoding="utf-8")
    section = _machine_section(page)
    assert len(re.findall(r"<img ", section)) == 2
    assert "<h3>Run run-new</h3>" in section and "<h3>Run run-old</h3>" in section
    assert "Ceilings measured" not in section.split("<h3>Run run-old</h3>")[1]
    # the old run's figure, from its folder as the report loads it, is the one-line note
    (df, meta, _), = load_runs([old])
    assert any(NO_EVIDENCE in t for t in _texts(plot_timeline(df, meta)))
