"""A wrong output is a verdict of its own in `attnbench compare` and the gate: ok -> wrong fails
whatever the time, wrong -> ok is fixed, and a missing or non-finite error is never "same"."""

import math

import numpy as np
import pandas as pd
import pytest

from harness.analysis.compare import FAILING, VERDICT_HELP, VERDICTS, compare_runs, output_problem, summarize
from harness.cli.main import main
from harness.core.case import Case
from harness.gate.verdict import Measurements, judge
from harness.render.compare import render_markdown, render_text
from harness.render.gate import gate_lines
from harness.store.schema import rows_to_frame

CASES = [Case("naive", heads=1, seq_len=n, head_dim=16) for n in (64, 128)]
IDS = [c.id for c in CASES]


def run(statuses=None, errors=None, times=None):
    """Two cases as a sweep writes them; a wrong row keeps its time, memory and error, as fidelity does."""
    rng = np.random.default_rng(1)
    rows = []
    for case in CASES:
        status = (statuses or {}).get(case.seq_len, "ok")
        t = (times or {}).get(case.seq_len, 1e-3)
        samples = (t * (1 + 0.01 * rng.standard_normal(30))).tolist()
        rows.append({"run_id": "r", "case_id": case.id, **case.to_record(), "status": status,
                     "reason": "output relative error 5.00e-01 against the float64 reference, above float32's "
                               "tolerance 1e-05" if status == "wrong" else "",
                     "time_s_median": float(np.median(samples)), "time_samples_s": samples,
                     "peak_mem_bytes": 1 << 20, "rel_error": (errors or {}).get(case.seq_len, 3e-7),
                     "calibration_s": 1e-3})
    return rows_to_frame(rows), {"calibration": [{"time_s_median": 1e-3}]}


def verdicts(frame):
    return dict(zip(frame["case_id"], frame["verdict"]))


def test_wrong_is_a_failing_verdict_with_help():
    assert "wrong" in VERDICTS and "wrong" in FAILING and "whatever the time" in VERDICT_HELP["wrong"]


def test_ok_to_wrong_fails_even_when_much_faster():
    result = compare_runs(*run(), *run(statuses={128: "wrong"}, errors={128: 0.5}, times={128: 1e-5}))
    assert verdicts(result) == {IDS[0]: "same", IDS[1]: "wrong"}
    row = result.set_index("case_id").loc[IDS[1]]
    assert "above float32's tolerance" in row["reason"] and row["new_time_s_median"] < 2e-5  # time kept, not judged
    assert pd.isna(row["time_ratio"])
    s = summarize(result)
    assert s["exit_code"] == 1 and s["failing"] == [IDS[1]] and s["counts"]["wrong"] == 1
    text = render_text(result)
    assert "wrong (ok -> wrong: output relative error" in text and "not judged" in text
    assert "**wrong (ok -> wrong" in render_markdown(result)


def test_wrong_to_ok_is_fixed_and_wrong_in_both_is_listed():
    fixed = compare_runs(*run(statuses={64: "wrong"}), *run())
    assert verdicts(fixed)[IDS[0]] == "fixed" and summarize(fixed)["exit_code"] == 0
    both = compare_runs(*run(statuses={64: "wrong"}), *run(statuses={64: "wrong"}))
    assert verdicts(both)[IDS[0]] == "not run" and summarize(both)["exit_code"] == 0
    assert "not run (wrong -> wrong" in render_text(both)  # never hidden like an unsupported pair


@pytest.mark.parametrize("error", [None, math.nan, math.inf, 2e-5])
def test_an_ok_row_whose_error_is_missing_non_finite_or_above_tolerance_is_wrong(error):
    result = compare_runs(*run(), *run(errors={64: error}))
    assert verdicts(result) == {IDS[0]: "wrong", IDS[1]: "same"}
    assert summarize(result)["exit_code"] == 1
    reason = result.set_index("case_id").loc[IDS[0], "reason"]
    assert ("missing" in reason) if error is None or math.isnan(error) else ("inf" in reason or "tolerance" in reason)


def test_errors_missing_on_both_sides_or_over_tolerance_on_both_are_not_wrong():
    assert output_problem(None, None, "float32") is None  # nothing measured: nothing to hold NEW to
    assert output_problem(2e-5, 3e-5, "float32") is None  # as inaccurate as before: the error verdict says how
    assert output_problem(3e-7, 5e-7, "float32") is None
    assert "float16" in output_problem(1e-3, 0.1, "float16")


# ---- the gate -------------------------------------------------------------------------------
def measurements(new_status="ok", new_error=1e-7, pairs=3):
    m = Measurements()
    for _ in range(pairs):
        blocks = {}
        for side in ("base", "new"):
            blocks[side] = {}
            for i, cid in enumerate(IDS):
                status = new_status if side == "new" and i == 1 else "ok"
                if status != "ok":
                    blocks[side][cid] = [{"status": status, "reason": "returned 4096 non-finite value(s)"}] * 2
                    continue
                first = {"calibration_s": 2e-3, "peak_mem_bytes": 2**22}
                error = new_error if side == "new" and i == 1 else 1e-7
                if error is not None:
                    first["rel_error"] = error
                blocks[side][cid] = [{"status": "ok", "median_s": 1e-3 * (1 + 0.01 * j), **(first if j == 0 else {})}
                                     for j in range(2)]
        m.add_pair(blocks)
    return m


@pytest.mark.parametrize("new_status,new_error", [("wrong", 1e-7), ("ok", None), ("ok", math.nan), ("ok", 1.0)])
def test_the_gate_fails_a_wrong_case_and_no_marker_accepts_it(new_status, new_error):
    frame = judge(IDS, measurements(new_status, new_error), 1.10, 0.95, accept=["all"])
    assert verdicts(frame) == {IDS[0]: "same", IDS[1]: "wrong"}
    s = summarize(frame)
    assert s["exit_code"] == 1 and s["failing"] == [IDS[1]]
    info = {"base_commit": "0" * 40, "base_ref": "main", "tree": ".", "head": "abc", "dirty": False, "wall_s": 1.0,
            "processes": 3, "threads": 1, "clock": "cpu", "confidence": 0.95, "threshold": 1.1, "rechecked": []}
    assert any(IDS[1] in line and "regressed" in line for line in gate_lines(frame, info))


def test_compare_help_lists_the_wrong_verdict(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "wrong: ok in BASE and wrong in NEW" in out and "1 if any case is wrong, slower, broken" in out
