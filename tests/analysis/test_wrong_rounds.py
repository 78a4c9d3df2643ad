"""A wrong output in a later round or re-measurement makes the cell wrong, whatever its time: a
luckier earlier measurement never stands in for it."""

from harness.analysis.rounds import keep_faster, merge_round

REASON = "returned 16 non-finite value(s) of 4096 (nan or inf)"


def test_a_wrong_round_or_remeasurement_makes_the_row_wrong(measured):
    first = {**measured(1e-3), "run_id": "r", "case_id": "c"}
    wrong = {**measured(5e-3), "status": "wrong", "reason": REASON, "attempts": 1}
    for merged in (merge_round(first, wrong), keep_faster(first, wrong)):
        assert merged["status"] == "wrong" and merged["time_s_median"] == 5e-3  # the wrong run's own figures
        assert merged["reason"].startswith(REASON) and "an earlier measurement passed" in merged["reason"]
        assert "run_id" not in merged
    assert merge_round(first, wrong)["attempts"] == 2
    failed = {"status": "error", "reason": "RuntimeError: boom"}
    assert merge_round(first, failed)["status"] == "ok"  # a failed round still leaves the measurement
