"""Issue 9 in the report: the banner says how far each run can be trusted, untrusted cells are drawn
hollow, a table lists them with their flags, and a run written before trust flags reads "not
assessed". Fixture frames and run folders only; nothing is measured."""

from __future__ import annotations

import html
import json
import re

import pandas as pd
import pytest
from matplotlib.colors import to_rgba

from harness.render.context import build_context
from harness.render.figures import UNTRUSTED_LABEL, plot_vs_n, variant_palette
from harness.render.prepare import prepare
from harness.render.report import load_runs, render_report
from harness.store.schema import rows_to_frame

NOISY = "noisy: IQR/median 0.23 > 0.1"
BUSY = "host busy: 0.61 of the cores used by other processes > 0.25"
EVIL_FLAG = "slow machine: <script>alert(1)</script> & more"

# (variant, pattern, N) -> flags; naive at N = 1024, global pattern is measured 10x slow
FLAGS = {("naive", "global", 1024): [NOISY, BUSY], ("local", "local", 256): [NOISY],
         ("naive", "local", 512): [EVIL_FLAG]}


def with_trust(rows: list[dict], flags: dict | None = None) -> list[dict]:
    """Rows with the trust columns as the runner writes them: ok cells in ``flags`` untrusted with those
    flags (JSON text), other ok cells trusted; cells that did not run are not assessed."""
    flags = FLAGS if flags is None else flags
    out = []
    for r in rows:
        key = (r["variant"], r["pattern"], r["seq_len"])
        if r["status"] != "ok":
            out.append({**r, "time_trusted": None, "time_flags": ""})
        elif key in flags:
            out.append({**r, "time_trusted": False, "time_flags": json.dumps(flags[key])})
        else:
            out.append({**r, "time_trusted": True, "time_flags": ""})
    return out


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = rows_to_frame(rows)
    # before the schema knows the columns, rows_to_frame drops them: add them as the store would
    for col in ("time_trusted", "time_flags"):
        if col not in df.columns or df[col].isna().all():
            df[col] = [r.get(col) for r in rows]
    df["time_trusted"] = pd.array(df["time_trusted"].tolist(), dtype="boolean")
    return df


@pytest.fixture(scope="module")
def flagged_run(tmp_path_factory, scaling_rows, write_fixture_run):
    rows = scaling_rows()
    for r in rows:
        if (r["variant"], r["pattern"], r["seq_len"]) == ("naive", "global", 1024):
            r["time_s_median"] *= 10
    return write_fixture_run(tmp_path_factory.mktemp("runs") / "run-t", with_trust(rows))


@pytest.fixture(scope="module")
def flagged_html(flagged_run):
    return render_report(load_runs([flagged_run]), generated_at="fixed")


def _text(page: str) -> str:
    """The page as a reader sees it: tags dropped, entities read, white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())


# ---- the banner ---------------------------------------------------------------------------------
def test_banner_says_how_many_cells_are_trusted_and_why_not(flagged_html):
    text = _text(flagged_html)
    # 11 ok cells in the scaling sweep; reasons counted by the text before the first ":"
    assert ("Trust: 8 of 11 measured cells trusted; 3 flagged (noisy 2, host busy 1, slow machine 1) \u2014 "
            "flagged cells never win 'Which to use', are drawn hollow and are left out of the time exponent fits "
            "and crossovers") in text
    assert 'class="trust trust-warn"' in flagged_html
    assert flagged_html.index("Trust: 8 of 11") < flagged_html.index('id="summary"')  # at the top


def test_flagged_and_failed_cells_carry_the_command_that_measures_them_again(flagged_html):
    def table(table_id: str) -> str:
        start = flagged_html.index(f'id="{table_id}"')
        return flagged_html[start:flagged_html.index("</table>", start)]

    flagged, failed = table("flagged-table"), table("failures-table")
    assert flagged.count("<tr>") - 1 == flagged.count("attnbench sweep --variants") == 3  # every flagged cell
    assert "attnbench sweep --variants naive --patterns global --causal no --seq-lens 1024" in flagged
    assert failed.count("<tr>") - 1 == failed.count("attnbench sweep --variants") >= 1  # every cell that did not run
    unsupported = [row for row in failed.split("<tr>") if ">unsupported<" in row]
    assert unsupported and all("--all-cells" in row for row in unsupported)  # its row comes back, with its reason


def test_banner_of_a_run_written_before_trust_flags(scaling_rows, write_fixture_run, tmp_path):
    run = write_fixture_run(tmp_path / "old", scaling_rows())
    runs = load_runs([run])
    df, meta, path = runs[0]
    runs = [(df.drop(columns=["time_trusted", "time_flags"], errors="ignore"), meta, path)]  # older schema
    ctx = build_context(runs, generated_at="fixed")
    assert [t["text"] for t in ctx["trust"]] == [
        "Trust: not assessed (run written before trust flags); every measured cell is drawn and fitted as measured"]
    assert ctx["trust"][0]["level"] == "na" and not ctx["trust_assessed"] and ctx["n_flagged"] == 0


def test_banner_when_every_cell_is_trusted_and_per_run_when_several(scaling_rows, write_fixture_run, tmp_path):
    good = write_fixture_run(tmp_path / "good", with_trust(scaling_rows(), flags={}))
    old = write_fixture_run(tmp_path / "old", scaling_rows())
    ctx = build_context(load_runs([good, old]), generated_at="fixed")
    assert [{k: t[k] for k in ("text", "level")} for t in ctx["trust"]] == [
        {"text": "Trust, run good: 11 of 11 measured cells trusted", "level": "ok"},
        {"text": "Trust, run old: not assessed (run written before trust flags); every measured cell is drawn "
                 "and fitted as measured", "level": "na"}]


# ---- the flagged cells and the tidy table ----------------------------------------------------------
def test_flagged_cells_table_lists_each_untrusted_cell_with_its_flags(flagged_html):
    start = flagged_html.index('<h2 id="flagged">')
    section = flagged_html[start:flagged_html.index('<h2 id="roofline">')]
    assert "Flagged cells (3)" in section
    assert flagged_html.rindex('id="shape') < start  # after the per-shape sections
    assert f"{NOISY}; {BUSY}" in _text(section)
    assert section.count("<tr>") == 1 + 3  # header and three cells
    assert "<script>alert(1)</script>" not in flagged_html and "&lt;script&gt;alert(1)" in section


def test_tidy_table_has_trusted_and_flags_columns(flagged_html):
    tidy = flagged_html[flagged_html.index('<h2 id="tidy">'):]
    assert ">trusted</th>" in tidy and ">flags</th>" in tidy
    assert _text(tidy).count(NOISY) == 2


def test_sections_say_what_the_fits_and_crossovers_left_out(flagged_html):
    text = _text(flagged_html)
    assert "3 untrusted cells left out of the time fits and of the crossovers below" in text
    assert "1 untrusted cell (N = 1024) left out of the time fit" in text


def test_no_flagged_cell_and_not_assessed_say_so(scaling_rows, write_fixture_run, tmp_path):
    good = write_fixture_run(tmp_path / "good", with_trust(scaling_rows(), flags={}))
    page = render_report(load_runs([good]), generated_at="fixed")
    assert "No measured cell was flagged" in page and "hollow" not in page.split('<h2 id="summary">')[1]


# ---- figures --------------------------------------------------------------------------------------
def _markers(fig):
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_marker() not in (None, "None", "")]


def test_untrusted_cells_are_hollow_markers_of_the_variant_colour(scaling_rows):
    prep = prepare(_frame(with_trust(scaling_rows())))
    fig = plot_vs_n(prep, "time_ms", "ms", "time")
    hollow = [m for m in _markers(fig) if m.get_markerfacecolor() == "none"]
    palette = variant_palette(prep["variant"])
    points = sorted((int(x), to_rgba(m.get_markeredgecolor())) for m in hollow for x in m.get_xdata())
    assert points == sorted([(1024, to_rgba(palette["naive"])), (256, to_rgba(palette["local"])),
                             (512, to_rgba(palette["naive"]))])
    filled = [m for m in _markers(fig) if m.get_markerfacecolor() != "none"]
    assert sum(len(m.get_xdata()) for m in filled) == 11 - 3
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert UNTRUSTED_LABEL in labels


def test_memory_and_unassessed_frames_draw_every_marker_filled(scaling_rows):
    prep = prepare(_frame(with_trust(scaling_rows())))
    old = prepare(rows_to_frame(scaling_rows()).drop(columns=["time_trusted", "time_flags"], errors="ignore"))
    for fig in (plot_vs_n(prep, "peak_mem_mib", "MiB", "memory"), plot_vs_n(old, "time_ms", "ms", "time")):
        assert not [m for m in _markers(fig) if m.get_markerfacecolor() == "none"]
        assert UNTRUSTED_LABEL not in [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_show_flagged_lists_untrusted_cells_filtered_by_flag(flagged_run, capsys):
    from harness.cli.main import main

    assert main(["show", str(flagged_run), "--flagged"]) == 0
    out = capsys.readouterr().out
    assert out.count("flagged  ") == 3 and "3 flagged cell(s)" in out and BUSY in out
    assert main(["show", str(flagged_run), "--flagged", "host busy"]) == 0
    out = capsys.readouterr().out
    assert out.count("flagged  ") == 1 and "naive/global" in out and "1 flagged cell(s) with host busy" in out


@pytest.mark.parametrize("value", ["busy", "noisy,bogus"])
def test_show_flagged_with_an_unknown_flag_is_one_line(flagged_run, capsys, value):
    from harness.cli.main import main

    assert main(["show", str(flagged_run), "--flagged", value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown flag" in err and "host busy" in err
