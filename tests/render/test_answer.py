"""The report answers first: one trust verdict per run (the calibration drift inside it), then "Which
to use", then the plots, with provenance and the machine at the end; the variants that cannot run on
the device said once; the command that measures a cell again; `attnbench show` with the same table.
Fixture frames and run folders only; nothing is measured."""

from __future__ import annotations

import html
import json
import re

import pytest

from harness.render.answer import answer_rows, fmt_ratio, unavailable
from harness.render.prepare import prepare
from harness.render.report import load_runs, render_report
from harness.render.repro import repro_command
from harness.store.journal import write_json
from harness.store.schema import RUN_JSON, rows_to_frame

UNAVAILABLE = {"xformers": ["device=cpu (supported: cuda)", "xformers is not installed"],
               "sdpa_cudnn": ["device=cpu (supported: cuda)"]}


def _text(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())


def _trusted(rows):
    return [{**r, "time_trusted": r["status"] == "ok" or None, "time_flags": ""} for r in rows]


def _with_meta(run, **changes):
    meta = json.loads((run / RUN_JSON).read_text())
    meta.update(changes)
    write_json(run / RUN_JSON, meta)
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory, scaling_rows, write_fixture_run):
    rows = [r for r in _trusted(scaling_rows()) if r["variant"] != "xformers"]
    run = write_fixture_run(tmp_path_factory.mktemp("answer") / "run-u", rows)
    return _with_meta(run, unavailable=UNAVAILABLE, calibration=[
        {"when": "start", "kernel": "matmul_f32_512", "device": "cpu", "time_s_median": 1e-3},
        {"when": "end", "kernel": "matmul_f32_512", "device": "cpu", "time_s_median": 1.5e-3}],
        sweep={"device": "cpu", "budget_s": 0.05, "params": {}})


@pytest.fixture(scope="module")
def page(run):
    return render_report(load_runs([run]), generated_at="fixed")


def test_answer_rows_pick_the_fastest_trusted_variant_in_report_units(scaling_rows):
    prep = prepare(rows_to_frame(_trusted(scaling_rows())))
    got = answer_rows(prep, "naive").set_index(["pattern", "seq_len"])
    # local: 6e-7 N s, naive 1e-9 N^2 s: naive is faster below N = 600
    assert got.loc[("local", 256), "winner"] == "naive" and got.loc[("local", 256), "speedup_text"] == "1x"
    best = got.loc[("local", 2048)]
    assert best["winner"] == "local" and best["time_ms"] == pytest.approx(6e-7 * 2048 * 1e3)
    assert best["speedup_text"] == fmt_ratio(2048 / 600) == "3.41x" and best["saving_text"] == "4x"
    assert best["repro"].startswith("attnbench sweep --variants local --patterns local --causal no --seq-lens 2048")
    oom = got.loc[("global", 2048)]  # naive ran out of memory, xformers is unsupported: no winner
    assert oom["winner"] == "none" and oom["why"] == "no variant ran ok" and oom["repro"] == ""
    assert fmt_ratio(float("nan")) == "" and fmt_ratio(2.0) == "2x"


def test_the_note_names_the_variants_left_out_once_per_reason(scaling_rows):
    rows = [{**r, "time_trusted": False, "time_flags": "noisy"} if r["variant"] in ("local", "naive") else r
            for r in _trusted(scaling_rows())]
    got = answer_rows(prepare(rows_to_frame(rows)), "naive").set_index(["pattern", "seq_len"])
    assert got.loc[("local", 256), "why"] == ("no trusted variant: 2 ran ok, none with a trusted time; "
                                              "left out (untrusted: naive, local)")


def test_a_note_naming_faster_untrusted_variants_still_names_the_wrong_ones(scaling_rows):
    rows = []
    for r in _trusted(scaling_rows()):
        if (r["pattern"], r["seq_len"], r["variant"]) == ("local", 2048, "naive"):
            r = {**r, "time_s_median": 1e-6, "time_trusted": False, "time_flags": "noisy"}
        elif (r["pattern"], r["seq_len"], r["variant"]) == ("local", 2048, "xformers"):
            r = {**r, "status": "wrong", "reason": "output relative error 1.0e+00"}
        rows.append(r)
    got = answer_rows(prepare(rows_to_frame(rows)), "local").set_index(["pattern", "seq_len"])
    assert got.loc[("local", 2048), "why"] == "measured faster but untrusted: naive; left out (wrong: xformers)"


def test_the_summary_speedup_is_over_trusted_baselines_and_the_saving_over_every_case(scaling_rows):
    from harness.render.answer import answer_summary

    rows = [{**r, "time_trusted": False, "time_flags": "noisy"} if (r["variant"], r["seq_len"]) == ("naive", 1024)
            and r["pattern"] == "local" else r for r in _trusted(scaling_rows())]
    choice = answer_rows(prepare(rows_to_frame(rows)), "naive")
    # local: naive wins at 256 and 512 (1x); local wins at 1024 (naive untrusted; saving 2x) and 2048 (speedup
    # 2048 / 600 = 3.41x, saving 4x); global: naive wins at 256-1024 (1x), nothing at 2048 (naive out of memory).
    # Speedup: 3.41 ** (1 / 6) = 1.23 over six cases; saving: (2 * 4) ** (1 / 7) = 1.35 over seven.
    lines = answer_summary(choice, "naive")
    assert lines[1] == ("Against naive (geometric means): 1.23x faster over the 6 cases where both times are "
                        "trusted (1 more left out: naive's time untrusted); 1.35x less peak memory over the 7 cases "
                        "where both ran")


def test_at_a_glance_one_row_per_pattern_and_pass_one_column_per_n(scaling_rows):
    from harness.render.answer import glance

    rows = [{**r, "time_trusted": False, "time_flags": "noisy"} if (r["variant"], r["seq_len"], r["pattern"]) ==
            ("naive", 1024, "local") else r for r in _trusted(scaling_rows())]
    view = glance(answer_rows(prepare(rows_to_frame(rows)), "naive"), False, False)
    assert list(view.columns) == ["pattern_label", "causal", "pass", "N=256", "N=512", "N=1024", "N=2048"]
    by = {label.split()[0]: row for label, row in zip(view["pattern_label"], view.to_dict("records"))}
    assert [by["local"][f"N={n}"] for n in (256, 512, 1024, 2048)] == [
        "naive 1x", "naive 1x", "local ~1.71x", "local 3.41x"]  # ~: naive's own time untrusted
    assert by["global"]["N=2048"] == "none"  # naive out of memory, xformers unsupported


def test_report_opens_with_one_verdict_then_the_answer_then_plots_then_provenance(page):
    assert page.count('class="trust trust-') == 1
    order = [page.index(s) for s in ('class="trust trust-', '<h2 id="answer">', 'id="at-a-glance"',
                                     'id="which-to-use"',
                                     '<h2 id="shape1">', '<h2 id="flagged">', '<h2 id="tidy">', '<h2 id="runs">',
                                     '<h2 id="machine">')]
    assert order == sorted(order)


def test_calibration_drift_is_evidence_in_the_verdict_not_a_second_banner(page):
    text = _text(page)
    assert "not reliable" not in text
    verdict = re.search(r'<div class="trust trust-warn"><p>(.*?)</p>\s*<details class="evidence"><summary>(.*?)'
                        r'</summary>(.*?)</details></div>', page, re.S)
    assert _text(verdict.group(1)) == "Trust: 11 of 11 measured cells trusted"  # the verdict first, in a line
    assert _text(verdict.group(2)) == ("the evidence behind it (1 finding; the calibration kernel's time changed by "
                                       "50% during the run)")  # folded under it, the drift named
    assert _text(verdict.group(3)).startswith("the calibration kernel's time changed by 50%")
    assert "flagged slow machine (0 cells)" in _text(verdict.group(3))


def test_unavailable_variants_are_said_once_with_their_reasons(page, run):
    section = page[page.index('<h2 id="answer">'):page.index('<h2 id="shape1">')]
    text = _text(section)
    assert "xformers: device=cpu (supported: cuda); xformers is not installed" in text
    assert "sdpa_cudnn: device=cpu (supported: cuda)" in text
    assert _text(page).count("xformers is not installed") == 1
    assert [u["variant"] for u in unavailable([json.loads((run / RUN_JSON).read_text())])] == ["sdpa_cudnn",
                                                                                                "xformers"]
    assert unavailable([{"run_id": "old"}]) == []


def test_every_answer_and_tidy_row_carries_its_command(page):
    answer = page[page.index('id="which-to-use"'):page.index('</table>', page.index('id="which-to-use"'))]
    assert answer.count("attnbench sweep --variants") == 8 - 1  # 8 cases, one without a winner
    tidy = page[page.index('id="tidy-table"'):]
    assert "--budget-s 0.05" in tidy and tidy.count("attnbench sweep --variants") == 12  # every row


def test_the_tidy_filter_is_hidden_until_the_script_shows_it(page):
    assert re.search(r'<p class="filter" hidden>', page) and 'id="tidy-filter"' in page
    assert "http://" not in page.split("<script>")[-1] and "https://" not in page.split("<script>")[-1]


def test_repro_command_pins_every_axis_of_the_case():
    row = {"variant": "local", "pattern": "local", "causal": True, "seq_len": 4096, "q_len": 1, "kv_len": 4096,
           "batch": 2, "heads": 32, "kv_heads": 8, "head_dim": 128, "dtype": "bfloat16", "device": "cuda",
           "pass": "fwd", "window": 256.0, "segment": None, "threads": None, "doc_lens": None}
    meta = {"sweep": {"budget_s": 0.2, "params": {"local": {"block": 64}}}}
    assert repro_command(row, meta) == (
        "attnbench sweep --variants local --patterns local --causal yes --q-lens 1 --kv-lens 4096 --batch 2 "
        "--heads 32 --kv-heads 8 --head-dims 128 --dtypes bfloat16 --device cuda --passes fwd --window 256 "
        "--budget-s 0.2  # with variant parameters {\"block\": 64} (set them in a --config TOML)")
    doc = {**row, "pattern": "document", "q_len": 4096, "kv_heads": 32, "doc_lens": "[1024, 2048, 1024]",
           "threads": 2}
    assert repro_command(doc).endswith("--seq-lens 4096 --batch 2 --heads 32 --head-dims 128 --dtypes bfloat16 "
                                       "--device cuda --passes fwd --docs 3 --threads 2")


def test_show_prints_the_answer_the_unavailable_variants_and_a_repro(run, capsys):
    from harness.cli.main import main

    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "Which to use" in out and "speedup and memory saving vs naive" in out
    assert out.index("Which to use, at a glance") < out.index("Which to use, every case")
    assert re.search(r"global\s+no\s+fwd\s+naive 1x\s+naive 1x\s+naive 1x\s+none", out)  # N=256..2048
    notes = [line for line in out.splitlines() if re.match(r"\[\d+\] ", line)]  # under the table, once each
    assert notes == ["[1] no variant ran ok"] and out.count("[1]") == 2  # the mark in its row, the note below
    assert out.count("not run: xformers cannot run on cpu: device=cpu (supported: cuda); xformers is not "
                     "installed") == 1
    assert "changed by 50%" in out.split("\n")[1]  # the drift in the trust line
    case = "local/local/False/2048/fwd/float32"
    assert main(["show", str(run), "--repro", case]) == 0
    assert capsys.readouterr().out.strip().startswith("attnbench sweep --variants local --patterns local")
    assert main(["show", str(run), "--repro", "nope"]) == 2
    assert "no case 'nope'" in capsys.readouterr().err


def test_a_suspicious_winner_says_so_and_the_report_has_the_section(scaling_rows, make_row, tmp_path,
                                                                    write_fixture_run):
    from harness.render.answer import mark_suspicious
    from harness.render.suspicious import suspicious_table

    rows = _trusted(scaling_rows(ns=(256, 512)) + [make_row("cheat", 512, pattern="local", time_s=1e-9, mem=1)])
    prep = prepare(rows_to_frame(rows))
    choice = mark_suspicious(answer_rows(prep, "naive"), suspicious_table(prep)).set_index(["pattern", "seq_len"])
    assert choice.loc[("local", 512), "winner"] == "cheat"
    assert choice.loc[("local", 512), "why"].startswith("suspicious: ")
    assert not choice.loc[("local", 256), "why"].startswith("suspicious")
    page = render_report(load_runs([write_fixture_run(tmp_path / "s", rows)]), generated_at="fixed")
    assert '<h2 id="suspicious">Suspicious speedups (1)</h2>' in page
