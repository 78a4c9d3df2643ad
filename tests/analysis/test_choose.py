"""Which variant to use, on hand-made frames: the fastest trusted ok cell wins; untrusted, wrong and
failed cells never do; the baseline's ratios, and the reasons when nothing can win."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.analysis.choose import geometric_mean, which_to_use, wins


def cell(variant, n=256, *, time_s=1e-3, mem=1000, status="ok", trusted=True, pattern="global", rel_error=1e-6,
         **extra):
    ok = status in ("ok", "wrong")
    return {"run_id": "r", "case_id": f"{variant}/{pattern}/{n}", "variant": variant, "pattern": pattern,
            "causal": False, "pass": "fwd", "seq_len": n, "status": status,
            "time_s_median": time_s if ok else None, "time_s_iqr": time_s / 10 if ok else None,
            "peak_mem_bytes": mem if ok else None, "rel_error": rel_error if ok else None,
            "time_trusted": trusted if status == "ok" else None, **extra}


def choose(rows, baseline="naive"):
    return which_to_use(pd.DataFrame(rows), baseline).set_index("seq_len")


def test_the_fastest_trusted_cell_wins_with_its_ratios_over_the_baseline():
    got = choose([cell("naive", time_s=4e-3, mem=8000), cell("local", time_s=1e-3, mem=2000, rel_error=3e-6),
                  cell("chunked", time_s=2e-3, mem=1000)]).loc[256]
    assert got["variant"] == "local" and got["case_id"] == "local/global/256"
    assert got["time_s_median"] == 1e-3 and got["peak_mem_bytes"] == 2000 and got["rel_error"] == 3e-6
    assert got["speedup"] == pytest.approx(4.0) and got["memory_saving"] == pytest.approx(4.0)
    assert got["baseline_status"] == "ok" and got["baseline_trusted"] is True and got["trust"] is True
    assert got["candidates"] == 3 and got["note"] == "" and got["faster_untrusted"] == ""


def test_untrusted_and_wrong_cells_never_win_and_are_named():
    got = choose([cell("naive", time_s=4e-3), cell("fast", time_s=1e-4, trusted=False),
                  cell("liar", time_s=1e-5, status="wrong"), cell("ok", time_s=3e-3)]).loc[256]
    assert got["variant"] == "ok" and got["candidates"] == 2
    assert got["faster_untrusted"] == "fast"
    assert got["left_out"] == "untrusted: fast; wrong: liar" and got["wrong"] == "liar"


def test_no_trusted_cell_means_no_winner_and_says_why():
    got = choose([cell("naive", trusted=False), cell("local", status="oom")]).loc[256]
    assert got["variant"] is None and math.isnan(got["time_s_median"]) and math.isnan(got["speedup"])
    assert got["note"] == "no trusted variant: 1 ran ok, none with a trusted time"
    nothing = choose([cell("naive", status="error"), cell("local", status="unsupported")]).loc[256]
    assert nothing["variant"] is None and nothing["note"] == "no variant ran ok"


def test_the_baseline_can_win_and_its_missing_or_untrusted_time_is_said():
    assert choose([cell("naive", time_s=1e-3), cell("local", time_s=2e-3)]).loc[256, "speedup"] == 1.0
    untrusted = choose([cell("naive", time_s=4e-3, trusted=False), cell("local", time_s=2e-3)]).loc[256]
    assert untrusted["speedup"] == pytest.approx(2.0) and untrusted["baseline_trusted"] is False
    assert "naive's time is untrusted" in untrusted["note"]
    oom = choose([cell("naive", status="oom"), cell("local")]).loc[256]
    assert math.isnan(oom["speedup"]) and oom["baseline_status"] == "oom" and oom["note"] == "naive oom"
    absent = choose([cell("local")]).loc[256]
    assert absent["baseline_status"] == "not run" and absent["note"] == "naive not run"


def test_one_answer_per_case_and_not_assessed_cases_say_so():
    rows = [cell("naive", n, time_s=n * 1e-6, trusted=None) for n in (128, 256)]
    rows += [cell("local", n, time_s=2e-4, trusted=None) for n in (128, 256)]
    got = choose(rows)
    assert got["variant"].to_dict() == {128: "naive", 256: "local"}
    assert got["trust"].isna().all() and (got["note"].str.contains("trust not assessed")).all()
    # in a case where some cell was assessed, an unassessed cell cannot win
    mixed = choose([cell("naive", time_s=4e-3), cell("local", time_s=1e-3, trusted=None)]).loc[256]
    assert mixed["variant"] == "naive"


def test_fidelity_is_carried_where_the_frame_has_it_and_empty_frames_work():
    got = choose([cell("naive", fidelity=0.99), cell("local", time_s=1e-4, fidelity=0.9)]).loc[256]
    assert got["fidelity"] == pytest.approx(0.9)
    assert math.isnan(choose([cell("naive")]).loc[256, "fidelity"])
    assert which_to_use(pd.DataFrame(columns=["variant", "status", "seq_len"]), "naive").empty


def test_wins_and_geometric_mean():
    got = which_to_use(pd.DataFrame([cell("naive", 1, time_s=1.0), cell("local", 1, time_s=0.5),
                                     cell("naive", 2, time_s=1.0), cell("local", 2, time_s=0.25),
                                     cell("naive", 3, trusted=False)]), "naive")
    assert wins(got).to_dict() == {"local": 2}
    assert geometric_mean(got["speedup"]) == pytest.approx(math.sqrt(2 * 4))
    assert math.isnan(geometric_mean([math.nan, 0]))
