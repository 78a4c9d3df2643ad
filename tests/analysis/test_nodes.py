"""Runs spread over several nodes (the Ray executor): compare normalizes each row by the calibration
of the node that measured it, and the report's series tell device kinds apart."""

import numpy as np
import pandas as pd

from harness.analysis.compare import compare_runs, node_calibration_s
from harness.core.case import Case
from harness.render.prepare import prepare
from harness.store.schema import rows_to_frame


def frame(times: dict, nodes: dict, run_id: str, device_names: dict | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for n, t in times.items():
        case = Case("naive", heads=1, seq_len=n, head_dim=16)
        samples = (t * (1 + 0.01 * rng.standard_normal(30))).tolist()
        rows.append({"run_id": run_id, "case_id": case.id, **case.to_record(), "status": "ok", "reason": "",
                     "time_s_median": float(np.median(samples)), "time_samples_s": samples, "node": nodes[n],
                     "device_name": (device_names or {}).get(n, "cpu-a"), "peak_mem_bytes": 1 << 20})
    return rows_to_frame(rows)


def meta(node_cals: dict) -> dict:
    first = next(iter(node_cals.values()))
    return {"calibration": [{"time_s_median": first}],
            "nodes": {node: {"calibration": [{"time_s_median": c}]} for node, c in node_cals.items()}}


def test_each_row_is_normalized_by_its_own_node():
    base = frame({64: 1e-3, 128: 2e-3}, {64: "a", 128: "a"}, "base")
    # NEW: the N=128 case ran on node b, a machine twice as slow (its calibration says so)
    new = frame({64: 1e-3, 128: 4e-3}, {64: "a", 128: "b"}, "new")
    result = compare_runs(base, meta({"a": 1e-3}), new, meta({"a": 1e-3, "b": 2e-3}))
    verdicts = dict(zip(result["case_id"], result["verdict"]))
    assert set(verdicts.values()) == {"same"}, result[["case_id", "time_ratio_raw", "time_ratio"]]
    slow = result.set_index("case_id").loc[Case("naive", heads=1, seq_len=128, head_dim=16).id]
    assert abs(slow["time_ratio_raw"] - 2.0) < 0.05 and abs(slow["time_ratio"] - 1.0) < 0.05
    assert node_calibration_s(meta({"a": 1e-3}), "unknown-node") == 1e-3  # falls back to the run's


def test_report_series_tell_device_kinds_apart():
    df = frame({64: 1e-3, 128: 2e-3}, {64: "a", 128: "b"}, "r", device_names={64: "H200", 128: "A100"})
    prep = prepare(df)
    assert sorted(prep["series"]) == ["A100", "H200"]


def test_an_untrusted_time_never_gets_a_time_verdict():
    base = frame({64: 1e-3}, {64: "a"}, "base")
    new = frame({64: 3e-3}, {64: "a"}, "new")  # 3x slower, but measured while the host was busy
    new["time_trusted"] = pd.array([False], dtype="boolean")
    new["time_flags"] = ['["host busy: 0.61 of the cores used by other processes > 0.25"]']
    result = compare_runs(base, meta({"a": 1e-3}), new, meta({"a": 1e-3}))
    assert result["verdict"].tolist() == ["untrusted"] and "NEW: host busy" in result["reason"].iloc[0]
    new["time_trusted"] = pd.array([True], dtype="boolean")
    assert compare_runs(base, meta({"a": 1e-3}), new, meta({"a": 1e-3}))["verdict"].tolist() == ["slower"]
