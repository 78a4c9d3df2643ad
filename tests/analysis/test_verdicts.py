"""Verdicts on every measured quantity: peak memory without statistics, error against the dtype's
tolerance or 10x the base's; each row normalized by the calibration timed beside it."""

import numpy as np

from harness.analysis.compare import compare_runs, error_verdict, mem_verdict, summarize
from harness.core.case import Case
from harness.store.schema import rows_to_frame


def run(peaks=None, errors=None, times=None, cals=None, run_id="r"):
    rng = np.random.default_rng(1)
    rows = []
    for n in (64, 128):
        case = Case("naive", heads=1, seq_len=n, head_dim=16)
        t = (times or {}).get(n, 1e-3)
        samples = (t * (1 + 0.01 * rng.standard_normal(30))).tolist()
        rows.append({"run_id": run_id, "case_id": case.id, **case.to_record(), "status": "ok", "reason": "",
                     "time_s_median": float(np.median(samples)), "time_samples_s": samples,
                     "peak_mem_bytes": (peaks or {}).get(n, 64 << 20), "rel_error": (errors or {}).get(n, 3e-7),
                     "calibration_s": (cals or {}).get(n, 1e-3)})
    return rows_to_frame(rows), {"calibration": [{"time_s_median": 1e-3}]}


def test_memory_verdicts_need_5_percent_and_a_mebibyte():
    assert mem_verdict(100 << 20, 106 << 20) == "more" and mem_verdict(100 << 20, 104 << 20) == "same"
    assert mem_verdict(1000, 2000) == "same"  # doubled, but under a MiB: allocator granularity
    assert mem_verdict(106 << 20, 100 << 20) == "less" and mem_verdict(None, 1) is None


def test_error_verdicts():
    assert error_verdict(3e-7, 2e-5, "float32") == "worse"  # above float32's 1e-5
    assert error_verdict(3e-8, 4e-7, "float32") == "worse"  # 10x the base, above 1% of the tolerance
    assert error_verdict(3e-9, 4e-8, "float32") == "same"  # 10x, but far below the tolerance
    assert error_verdict(1e-3, 1e-2, "float16") == "same"


def test_a_1_3x_memory_increase_fails_the_comparison_and_identical_runs_pass():
    base = run()
    assert summarize(compare_runs(*base, *run()))["exit_code"] == 0
    result = compare_runs(*base, *run(peaks={128: int(1.3 * (64 << 20))}))
    s = summarize(result)
    assert s["exit_code"] == 1 and s["failing"] == [Case("naive", heads=1, seq_len=128, head_dim=16).id]
    assert result["mem_verdict"].tolist() == ["same", "more"] and set(result["verdict"]) == {"same"}


def test_a_less_accurate_case_fails():
    result = compare_runs(*run(), *run(errors={64: 5e-5}))
    assert result["error_verdict"].tolist() == ["worse", "same"] and summarize(result)["exit_code"] == 1


def test_each_row_is_normalized_by_the_calibration_timed_beside_it():
    # NEW's N=128 cell ran while the machine was 2x slower; its calibration, timed right before, says so
    result = compare_runs(*run(), *run(times={128: 2e-3}, cals={128: 2e-3}))
    assert result["verdict"].tolist() == ["same", "same"]
    assert abs(result["time_ratio"].iloc[1] - 1.0) < 0.05 and abs(result["time_ratio_raw"].iloc[1] - 2.0) < 0.1
