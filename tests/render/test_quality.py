"""The report's "Quality versus cost" section and its table in `attnbench show`, on fixture frames
and run folders: one figure per input source, the "cheapest within" table with the sources side by
side (overall on a model's worst layer, and per layer), escaped names, no section for runs without
fidelity columns, the section's place in the page, and the winner's fidelity in "Which to use".
Nothing is measured."""

from __future__ import annotations

import html
import re

import pandas as pd
import pytest

from harness.analysis.frontier import cheapest_within, configurations, over_layers
from harness.render.answer import answer_rows, answer_table
from harness.render.figures import figure_png
from harness.render.prepare import prepare
from harness.render.quality import (
    MAX_PROBLEMS,
    config_label,
    plot_quality,
    quality_section,
    within_long,
    within_table,
    within_view,
)
from harness.render.report import load_runs, render_report

SMOLLM2 = "smollm2:0123456789ab"


def _text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", str(fragment))).split())


def _section(page: str) -> str:
    start = page.index('<h2 id="quality">')
    return page[start:page.index("<h2 ", start + 1)]


@pytest.fixture(scope="module")
def frame(fidelity_rows):
    return pd.DataFrame(fidelity_rows())


@pytest.fixture(scope="module")
def run(tmp_path_factory, fidelity_rows, write_fidelity_run):
    return write_fidelity_run(tmp_path_factory.mktemp("quality") / "run-q", fidelity_rows())


@pytest.fixture(scope="module")
def page(run):
    return render_report(load_runs([run]), generated_at="fixed")


def test_labels_name_a_configuration_by_its_parameters():
    assert config_label({"pattern": "sink", "window": 128, "sinks": 4, "topk": pd.NA}) == "sink (w=128, s=4)"
    assert config_label({"pattern": "global", "window": None}) == "global"
    assert config_label({"pattern": "dilated", "window": 256, "stride": 2}) == "dilated (w=256, d=2)"


def test_a_figure_per_source_with_four_panels_per_shape(frame):
    confs = over_layers(configurations(frame))
    for source in ("random", SMOLLM2):
        fig = plot_quality(confs[confs["inputs"] == source], f"Quality versus cost, {source}")
        axes = fig.get_axes()
        assert len(axes) == 4 and all(ax.get_xscale() == "log" for ax in axes)
        labels = {t.get_text() for t in axes[0].texts}
        assert {"global", "local (w=128)", "local (w=512)", "sink (w=128, s=4)", "topk (k=64)"} <= labels
        assert figure_png(fig).startswith(b"\x89PNG")
    assert "no configuration ran ok" in plot_quality(confs.iloc[:0], "empty").get_axes()[0].texts[0].get_text()


def test_a_figure_draws_the_longest_shapes_and_says_so(fidelity_rows):
    frame = pd.DataFrame([r for n in (256, 512, 1024, 2048, 4096) for r in fidelity_rows(inputs=("random",), n=n)])
    fig = plot_quality(over_layers(configurations(frame)), "many")
    axes = fig.get_axes()
    assert len(axes) == 4 * MAX_PROBLEMS
    assert [ax.get_title().split(",")[0] for ax in axes[::4]] == ["N=512", "N=1024", "N=2048", "N=4096"]
    assert f"the {MAX_PROBLEMS} longest of 5 shapes" in fig.get_suptitle()


def test_a_frame_with_a_single_configuration_still_has_its_section(fidelity_rows):
    one = [r for r in fidelity_rows(inputs=("random",)) if r["pattern"] == "local" and r.get("window") == 512]
    section = quality_section(pd.DataFrame(one))
    assert section is not None and len(section["figures"]) == 1 and section["per_layer"] is None
    text = _text(section["overall"])
    assert "local (w=512)" in text and "none meets it" in text  # 8% error: within 10% only, no global measured
    fig = plot_quality(over_layers(configurations(pd.DataFrame(one))), "one")
    assert len(fig.get_axes()) == 4


def test_no_fidelity_columns_no_section(scaling_rows, write_fixture_run, tmp_path):
    assert quality_section(pd.DataFrame(scaling_rows())) is None
    assert quality_section(pd.DataFrame(scaling_rows()).assign(fidelity_out_rel_error=None)) is None
    page = render_report(load_runs([write_fixture_run(tmp_path / "old", scaling_rows())]), generated_at="fixed")
    assert 'id="quality"' not in page and 'href="#quality"' not in page


def test_the_cheapest_within_table_sets_the_sources_side_by_side(frame):
    cheap = cheapest_within(frame)
    view, cols = within_view(cheap)
    assert [c.header for c in cols][:4] == ["shape", "within", "random: use", "random: variant"]
    assert f"{SMOLLM2} (worst layer): perplexity" in [c.header for c in cols]
    assert "random: perplexity" not in [c.header for c in cols]  # random inputs have no perplexity
    row = {r["within"]: r for r in view.to_dict("records")}
    # random inputs are diffuse: only global is within 5%; the model's attention is local: w=128 is
    assert row["5%"]["0:use"] == "global" and row["5%"]["1:use"] == "local (w=128)"
    assert row["10%"]["0:use"] == "local (w=512)" and row["10%"]["0:speedup"] == pytest.approx(2.0)
    per_layer, _ = within_view(cheap, per_layer=True)
    at = {(r["within"], r["layer"]): r["1:use"] for r in per_layer.to_dict("records")}
    assert at[("1%", 0)] == "sink (w=128, s=4)" and at[("1%", 1)] == "global"  # layer 1's errors are 1.5x
    assert row["1%"]["1:use"] == "global"  # all layers: judged on the worst one
    assert set(per_layer["0:use"]) == {"global", "local (w=512)"}  # random's answer repeated on every layer
    long, _ = within_long(cheap)
    assert long["inputs_text"].tolist()[:2] == ["random", f"{SMOLLM2} (worst of 2 layers)"]


def test_every_name_is_escaped(fidelity_rows, evil_variant):
    frame = pd.DataFrame(fidelity_rows(variant_names={"local": evil_variant}))
    table = str(within_table(cheapest_within(frame)))
    assert evil_variant not in table and html.escape(evil_variant) in table
    section = quality_section(frame)
    assert evil_variant not in str(section["overall"]) + str(section["per_layer"])
    assert evil_variant in _text(section["overall"])


def test_the_report_has_the_section_after_which_to_use_and_before_the_scaling_plots(page):
    assert page.index('<h2 id="answer">') < page.index('<h2 id="quality">') < page.index('<h2 id="shape1">')
    assert 'href="#quality"' in page
    section = _section(page)
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', section)) == 2
    assert f'alt="quality versus cost, inputs {SMOLLM2}, worst of 2 layers"' in section
    text = _text(section)
    assert f"{SMOLLM2} (run run-q): dense perplexity 12" in text
    assert 'id="cheapest-within"' in section and 'id="cheapest-within-layers"' in section
    gap = section[section.index('id="oracle-gap"'):]
    gap = gap[:gap.index("</table>")]
    assert "top-k oracle, same budget (%)" in gap and "4x" in _text(gap)  # fixture: error = 4 x the oracle's


def test_which_to_use_carries_the_winners_fidelity(frame, page):
    prep = prepare(frame)
    choice = answer_rows(prep, "naive").set_index(["inputs", "pattern_label"])
    assert choice.loc[("random", "local (w=128)"), "fidelity_out_rel_error"] == pytest.approx(0.20)
    assert choice.loc[(SMOLLM2, "local (w=128)"), "fidelity_out_rel_error"] == pytest.approx(0.045)  # worst layer
    assert choice.loc[(SMOLLM2, "local (w=128)"), "fidelity_ppl"] == pytest.approx(13.8)
    assert choice.loc[("random", "global"), "fidelity_out_rel_error"] == 0.0
    table = _text(answer_table(choice.reset_index(), "naive", False, False))
    assert "output error vs global (%)" in table and "perplexity" in table
    answer = page[page.index('<h2 id="answer">'):page.index('<h2 id="quality">')]
    assert "output error vs global (%)" in answer


def test_show_prints_the_cheapest_within_table(run, capsys, scaling_rows, write_fixture_run, tmp_path):
    from harness.cli.main import main

    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "Quality versus cost" in out and "dense perplexity 12" in out
    quality = out[out.index("Quality versus cost"):]
    for token in ("within", "1%", "5%", "10%", "random", "global", "local"):
        assert token in quality
    old = write_fixture_run(tmp_path / "old", scaling_rows())
    assert main(["show", str(old)]) == 0
    assert "Quality versus cost" not in capsys.readouterr().out
