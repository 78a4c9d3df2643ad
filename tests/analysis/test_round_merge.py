"""Rounds (--rounds) as the analysis sees them: the fastest round kept whole, the rounds' medians, and
the flags a cell measured in rounds can carry."""

import json

import numpy as np
import pandas as pd
import pytest

from harness.analysis.rounds import merge_round, rounds_done
from harness.analysis.trust import assess, cross_suspects
from harness.analysis.trust import summary as trust_summary
from harness.core.case import Case


def test_a_round_keeps_the_fastest_measurement_whole_and_each_rounds_median(measured):
    first = {**measured(2e-3), "run_id": "r", "case_id": "c", "wall_s": 1.0, "finished_at": 5.0,
             "remeasured_for": "round 2"}
    faster = measured(1e-3, time_number_per_sample=2, calibration_s=0.9e-3, host_busy=0.01, flops_per_s=2e9)
    two = merge_round(first, faster)
    assert "run_id" not in two and "finished_at" not in two and "remeasured_for" not in two  # the new row's own
    assert two["time_rounds_s"] == [2e-3, 1e-3] and rounds_done(two) == 2 and rounds_done(first) == 1
    read_back = {**two, "time_rounds_s": np.array(two["time_rounds_s"])}  # as a table gives it back
    assert rounds_done(read_back) == 2 and rounds_done({"time_rounds_s": pd.NA}) == 1
    # The faster round's measurement and the evidence taken beside it, together; attempts add up.
    assert two["time_s_median"] == 1e-3 and two["time_n_samples"] == 10 and two["time_number_per_sample"] == 2
    assert two["calibration_s"] == 0.9e-3 and two["host_busy"] == 0.01 and two["flops_per_s"] == 2e9
    assert two["attempts"] == 2
    three = merge_round(two, measured(4e-3, host_busy=0.4))  # a slower round only adds its median
    assert three["time_rounds_s"] == [2e-3, 1e-3, 4e-3] and three["time_s_median"] == 1e-3
    assert three["host_busy"] == 0.01 and three["attempts"] == 3 and three["time_s_max"] == 1e-3


@pytest.mark.parametrize("medians,flagged", [([1e-3, 1.1e-3], False), ([1e-3, 1.2e-3], True),
                                             ([3e-3, 1e-3, 1.14e-3], False), ([1e-3, 2e-3, 2e-3], True)])
def test_a_fastest_round_no_other_reproduces_is_flagged(measured, medians, flagged):
    row = {**measured(min(medians)), "time_rounds_s": medians}
    flags = json.loads(assess([row], {})[0]["time_flags"] or "[]")
    assert any(f.startswith("unreproduced") for f in flags) == flagged
    assert assess([row], {})[0]["time_trusted"] == (not flagged)
    summary = trust_summary(assess([row], {}))
    assert summary["rounds"]["cells"] == 1 and summary["rounds"]["agree"] == (0 if flagged else 1)


def test_a_row_left_with_one_round_is_flagged_and_unusable_medians_are_skipped(measured):
    from harness.analysis.trust import parse_flag_filter, reproduction

    one = merge_round({**measured(1e-3), "remeasured_for": None}, {"status": "timeout", "reason": "300 s"})
    flags = json.loads(assess([{**one, "remeasured_for": "round 2"}], {})[0]["time_flags"])
    assert flags == ["unreproduced: measured in rounds, but only one of them succeeded"]
    assert reproduction([1e-3, None, float("nan"), 0.0]) is None and reproduction([2e-3, None, 1e-3]) == 2.0
    assert parse_flag_filter("unreproduced, noisy") == ["unreproduced", "noisy"]


def test_a_row_measured_once_has_no_rounds_flag_or_summary(measured):
    assessed = assess([measured(1e-3)], {})
    assert assessed[0]["time_trusted"] is True and "rounds" not in trust_summary(assessed)


def test_a_failed_round_keeps_the_measurement_and_counts_its_attempt(measured):
    two = merge_round(measured(1e-3), {"status": "error", "reason": "RuntimeError: boom", "attempts": 1})
    assert two["time_s_median"] == 1e-3 and two["attempts"] == 2 and rounds_done(two) == 1


def test_a_round_is_no_cross_cell_recheck(measured):
    fwd = Case("naive", seq_len=64, heads=1, head_dim=8)
    bwd = fwd.replace(pass_="fwd_bwd")
    rows = [{**measured(9e-3), "case_id": fwd.id, **fwd.to_record(), "remeasured_for": "round 2"},
            {**measured(3e-3), "case_id": bwd.id, **bwd.to_record(), "remeasured_for": "round 2"}]
    assert cross_suspects(rows) == {0: "fwd slower than its own fwd_bwd"}
    rows[0]["remeasured_for"] = "fwd slower than its own fwd_bwd"
    assert cross_suspects(rows) == {}


def test_a_clean_round_that_agrees_with_a_flagged_fastest_one_is_kept(measured):
    noisy = measured(1.0e-3, time_s_iqr=0.3e-3, host_busy=0.5)  # fastest, but its own evidence is flagged
    clean = measured(1.1e-3, calibration_s=0.95e-3)
    two = merge_round(noisy, clean, best_cal=1e-3)
    assert two["time_s_median"] == 1.1e-3 and two["calibration_s"] == 0.95e-3 and two["time_rounds_s"] == [1e-3, 1.1e-3]
    assessed = assess([{**two, "remeasured_for": "round 2"}], {})[0]
    assert assessed["time_trusted"] is True  # the kept round is clean, and the fastest round reproduces it
    # A clean round more than 15% slower than the fastest does not stand in for it: the flagged one stays.
    far = merge_round(noisy, measured(1.3e-3), best_cal=1e-3)
    assert far["time_s_median"] == 1.0e-3 and far["host_busy"] == 0.5
    # Nor does a clean round within 15% of this pair but not of the fastest round seen before.
    three = merge_round({**noisy, "time_rounds_s": [0.8e-3, 1.0e-3]}, measured(1.1e-3), best_cal=1e-3)
    assert three["time_s_median"] == 1.0e-3 and three["time_rounds_s"] == [0.8e-3, 1.0e-3, 1.1e-3]
    # Both clean: the faster is kept, as without flags.
    assert merge_round(measured(1.1e-3), measured(1.0e-3), best_cal=1e-3)["time_s_median"] == 1.0e-3


def test_each_round_keeps_the_names_of_its_own_flags(measured):
    """``time_rounds_flags``: per round, the names of its own flags, judged as it is merged, so a row
    says why a slower round stands in for the fastest; a failed round adds none; rounds merged before
    the column existed are None."""
    noisy = measured(1.0e-3, time_s_iqr=0.3e-3, host_busy=0.5)
    two = merge_round(noisy, measured(1.1e-3), best_cal=1e-3)
    first, second = json.loads(two["time_rounds_flags"])
    assert "noisy" in first and second == [] and len(two["time_rounds_s"]) == 2
    three = merge_round(two, measured(1.05e-3), best_cal=1e-3)
    assert json.loads(three["time_rounds_flags"]) == [first, [], []] and len(three["time_rounds_s"]) == 3
    failed = merge_round(three, {"status": "error", "reason": "boom"}, best_cal=1e-3)
    assert failed["time_rounds_flags"] == three["time_rounds_flags"]
    older = {**measured(1.0e-3), "time_rounds_s": [1.0e-3, 1.2e-3]}  # written before the column
    assert json.loads(merge_round(older, measured(1.1e-3), best_cal=1e-3)["time_rounds_flags"]) == [None, None, []]


def test_reproduction_is_judged_from_the_kept_round():
    from harness.analysis.trust import reproduction

    assert reproduction([1e-3, 1.1e-3, 2e-3], kept=1.1e-3) == pytest.approx(1.1)
    assert reproduction([1e-3, 1.5e-3, 2e-3], kept=2e-3) == pytest.approx(2 / 1.5)
    assert reproduction([1e-3, 1.5e-3]) == pytest.approx(1.5)  # the fastest when no kept round is named


def test_which_cells_are_measured_in_rounds():
    """In rounds: a multi-threaded CPU cell whose fastest round so far reads under ``ROUND_BELOW_S``. Not: a
    long one, one on a GPU, on one thread, or one a Ray task measured elsewhere."""
    from harness.analysis.rounds import ROUND_BELOW_S as bound, measured_in_rounds, rounds_wanted

    row = {"status": "ok", "device": "cpu", "torch_threads": 2, "time_s_median": 0.9 * bound}
    assert measured_in_rounds(row) and rounds_wanted(row, 1, 2) == 2 and rounds_wanted(row, 3, 2) == 3
    long = {**row, "time_s_median": 1.1 * bound}
    assert not measured_in_rounds(long) and rounds_wanted(long, 1, 2) == 1
    once = {**row, "time_s_median": 1.1 * bound, "time_rounds_s": [0.9 * bound, 1.1 * bound]}
    assert measured_in_rounds(once)  # once in rounds, in rounds
    read_back = {**row, "time_rounds_s": np.array([0.9 * bound, 1.0 * bound])}  # a list column from parquet
    assert measured_in_rounds(read_back)
    assert not measured_in_rounds({**row, "device": "cuda"}) and not measured_in_rounds({**row, "torch_threads": 1})
    assert not measured_in_rounds({**row, "node_id": "abc123"})
    assert not measured_in_rounds({**row, "time_s_median": None})


def test_how_many_rounds_a_call_gets_by_its_length():
    """``rounds_for``: --short-rounds for a call under SHORT_BELOW_S, at most LONGER_ROUNDS of them for
    one under ROUND_BELOW_S, ``rounds`` for a longer one; never fewer than ``rounds``. A row's rounds
    follow its fastest reading."""
    from harness.analysis.rounds import LONGER_ROUNDS, ROUND_BELOW_S, rounds_for, rounds_wanted
    from harness.analysis.trust import SHORT_BELOW_S

    short, longer, long = 0.9 * SHORT_BELOW_S, 1.1 * SHORT_BELOW_S, 1.1 * ROUND_BELOW_S
    assert [rounds_for(t, 1, 3) for t in (short, longer, long)] == [3, LONGER_ROUNDS, 1]
    assert [rounds_for(t, 1, 2) for t in (short, longer, long)] == [2, 2, 1]
    assert [rounds_for(t, 1, 1) for t in (short, longer, long)] == [1, 1, 1]
    assert [rounds_for(t, 4, 3) for t in (short, longer, long)] == [4, 4, 4]
    row = {"status": "ok", "device": "cpu", "torch_threads": 2, "time_s_median": longer}
    assert rounds_wanted(row, 1, 3) == LONGER_ROUNDS
    assert rounds_wanted({**row, "time_rounds_s": [longer, short]}, 1, 3) == 3
