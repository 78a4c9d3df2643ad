"""Issue 9 in the derived tables: ``prepare`` carries ``time_trusted``; exponent fits and crossovers
leave untrusted cells out and say so; cells not assessed (older runs) are used as before."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.analysis.trust_frame import flag_reason, parse_flags, trust_summary
from harness.render.cell_tables import untrusted_cells
from harness.render.prepare import prepare
from harness.render.scaling import crossovers, fit_exponents
from harness.store.schema import rows_to_frame

NS = (256, 512, 1024, 2048)
NOISY = "noisy: IQR/median 0.23 > 0.1"
BUSY = "host busy: 0.61 of the cores used by other processes > 0.25"


def _row(variant, n, time_s, *, pattern="local", status="ok"):
    """A tidy row with only what the derived tables read (the schema fills the rest with NA)."""
    ok = status == "ok"
    return {"run_id": "run-t", "case_id": f"{variant}/{pattern}/{n}", "variant": variant, "pattern": pattern,
            "causal": False, "window": 64 if pattern == "local" else None, "device": "cpu", "dtype": "float32",
            "batch": 1, "heads": 4, "seq_len": n, "head_dim": 64, "pass": "fwd", "status": status,
            "reason": "" if ok else "OutOfMemoryError", "time_s_median": time_s if ok else None,
            "time_s_iqr": time_s / 20 if ok else None, "time_n_samples": 5 if ok else None,
            "peak_mem_bytes": 8 * n * n if ok else None, "time_noisy": False if ok else None}


def _rows(spoil: dict | None = None):
    """naive ~ N^2, local ~ N (slower than naive below N = 1024); ``spoil`` multiplies some times."""
    spoil = spoil or {}
    rows = []
    for n in NS:
        rows.append(_row("naive", n, 1e-9 * n * n * spoil.get(("naive", n), 1.0)))
        rows.append(_row("local", n, 6e-7 * n * spoil.get(("local", n), 1.0)))
    return rows


def _frame(rows, flags: dict | None = None, assessed: bool = True):
    """The tidy frame with trust columns: cells in ``flags`` untrusted with those flags, other ok cells
    trusted, or every cell not assessed (NA) when ``assessed`` is False."""
    flags = flags or {}
    df = rows_to_frame(rows)
    trusted, texts = [], []
    for r in rows:
        key = (r["variant"], r["seq_len"])
        if not assessed or r["status"] != "ok":
            trusted.append(None)
            texts.append(None)
        else:
            trusted.append(key not in flags)
            texts.append(json.dumps(flags[key]) if key in flags else "")
    df["time_trusted"] = pd.array(trusted, dtype="boolean")  # as stored: nullable boolean, NA = not assessed
    df["time_flags"] = texts
    return df


def test_prepare_carries_trust_as_true_false_or_none():
    rows = _rows() + [_row("naive", 4096, None, status="oom")]
    prep = prepare(_frame(rows, {("naive", 512): [NOISY, BUSY]}))
    by = prep.set_index(["variant", "seq_len"])
    assert by.loc[("naive", 512), "time_trusted"] is False
    assert by.loc[("naive", 256), "time_trusted"] is True
    assert by.loc[("naive", 4096), "time_trusted"] is None  # did not run: nothing to trust
    assert by.loc[("naive", 512), "flags"] == [NOISY, BUSY]
    assert by.loc[("naive", 512), "flags_text"] == f"{NOISY}; {BUSY}"
    assert by.loc[("naive", 256), "flags"] == [] and by.loc[("naive", 256), "flags_text"] == ""


def test_a_run_written_before_trust_flags_is_not_assessed():
    old = rows_to_frame(_rows()).drop(columns=["time_trusted", "time_flags"], errors="ignore")
    prep = prepare(old)
    assert prep["time_trusted"].map(lambda t: t is None).all()
    assert (prep["flags_text"] == "").all()
    t = trust_summary(prep)
    assert t == {"measured": 8, "trusted": 0, "untrusted": 0, "not_assessed": 8, "reasons": []}
    assert untrusted_cells(prep).empty


@pytest.mark.parametrize(("flag", "reason"), [
    (NOISY, "noisy"), (BUSY, "host busy"), ("few calls: 1 timed, fewer than 5", "few calls"),
    ("host busy 0.61 > 0.25", "host busy"), ("fwd_bwd faster than its fwd", "fwd_bwd faster than its fwd"),
])
def test_flag_reason_is_the_text_before_the_first_colon(flag, reason):
    assert flag_reason(flag) == reason


@pytest.mark.parametrize(("cell", "flags"), [
    (None, []), ("", []), (float("nan"), []), ('["a: 1", "b"]', ["a: 1", "b"]), (["a"], ["a"]),
    ("not json: kept as one flag", ["not json: kept as one flag"]),
])
def test_parse_flags_reads_every_stored_form(cell, flags):
    assert parse_flags(cell) == flags


def test_exponent_fit_leaves_an_untrusted_time_out_and_says_so():
    spoiled = _rows({("naive", 2048): 100.0})  # a busy machine: 100x slower at the largest N
    flagged = prepare(_frame(spoiled, {("naive", 2048): [BUSY]}))
    exps = fit_exponents(flagged).set_index("variant")
    assert exps.loc["naive", "time_exponent"] == pytest.approx(2.0, abs=1e-6)
    assert exps.loc["naive", "mem_exponent"] == pytest.approx(2.0, abs=1e-6)  # memory keeps the cell
    assert exps.loc["naive", "untrusted"] == 1
    assert "1 untrusted cell (N = 2048) left out of the time fit" in exps.loc["naive", "note"]
    assert exps.loc["naive", "range"] == "N = 256..2048 (4 points)"
    assert exps.loc["local", "untrusted"] == 0 and exps.loc["local", "note"] == ""
    # not assessed (an older run): the same cells are fitted as measured, as before
    old = fit_exponents(prepare(_frame(spoiled, assessed=False))).set_index("variant")
    assert old.loc["naive", "time_exponent"] > 2.5 and old.loc["naive", "untrusted"] == 0


def test_too_few_trusted_sizes_give_no_time_slope_and_say_why():
    rows = _rows()
    flags = {("naive", n): [NOISY] for n in NS[1:]}
    exps = fit_exponents(prepare(_frame(rows, flags))).set_index("variant")
    assert exps.loc["naive", "time_exponent"] != exps.loc["naive", "time_exponent"]  # NaN
    assert "too few trusted sizes" in exps.loc["naive", "note"]


def test_crossovers_leave_untrusted_cells_out_and_say_so():
    # naive at N = 256 measured 50x slow: taken at face value, local wins there and the order flips twice
    spoiled = _rows({("naive", 256): 50.0})
    old = crossovers(prepare(_frame(spoiled, assessed=False)))
    assert old["flips"].tolist() == [2] and old["untrusted"].tolist() == [0]
    cross = crossovers(prepare(_frame(spoiled, {("naive", 256): [NOISY]})))
    assert cross["text"].tolist() == ["local is faster than naive from N = 1024 (slower at N = 512); "
                                      "1 untrusted cell left out"]
    assert cross["flips"].tolist() == [1] and cross["untrusted"].tolist() == [1]


def test_trust_summary_counts_cells_by_reason():
    flags = {("naive", 256): [NOISY], ("naive", 512): [NOISY, BUSY], ("local", 2048): ["host busy 0.4 > 0.25"],
             ("local", 256): []}
    prep = prepare(_frame(_rows(), flags))
    t = trust_summary(prep)
    assert (t["measured"], t["trusted"], t["untrusted"], t["not_assessed"]) == (8, 4, 4, 0)
    assert t["reasons"] == [("host busy", 2), ("noisy", 2), ("no reason recorded", 1)]
    table = untrusted_cells(prep)
    assert list(zip(table["variant"], table["seq_len"])) == [("local", 256), ("local", 2048), ("naive", 256),
                                                              ("naive", 512)]
    assert table.loc[3, "flags_text"] == f"{NOISY}; {BUSY}"
