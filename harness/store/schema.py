"""The tidy table's schema: file names of a run folder, columns and their nullable dtypes, versions, and
``floats``, a column read as plain numbers.

What each schema version (``run.json``'s ``schema_version``) added, and how older runs load, is
docs/schema.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCHEMA_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)  # older runs are migrated on load: missing columns are NA
JOURNAL = "journal.jsonl"
RUN_JSON = "run.json"
PARQUET = "results.parquet"
CSV = "results.csv"


# Column order of the tidy table; metric columns are null (not NaN, not 0) when a case did not run.
CASE_COLUMNS = ["variant", "pattern", "causal", "window", "segment", "sinks", "stride", "globals", "topk", "doc_lens",
                "device", "dtype", "batch", "heads", "kv_heads", "seq_len", "q_len", "kv_len", "head_dim", "pass",
                "threads", "params", "inputs", "inputs_layer"]


METRIC_COLUMNS = ["status", "reason", "setup_s", "mask_s", "time_s_median", "time_s_iqr", "time_s_min", "time_s_max",
                  "time_n_samples", "time_number_per_sample", "time_budget_s", "time_noisy", "peak_mem_bytes", "mask_mem_bytes", "peak_mem_method",
                  "flops", "flops_per_s", "ceiling_flops_per_s", "ceiling_fraction", "bytes", "bytes_per_s",
                  "bandwidth_bytes_per_s", "bandwidth_fraction", "rel_error", "grad_rel_error", "error_seq_len",
                  "error_batch", "error_heads", "error_on_twin", "isolated", "node", "node_id", "device_name", "wall_s",
                  "finished_at",
                  "calibration_s", "sync_s", "host_busy", "torch_threads", "attempts", "remeasured_for", "gpu_sm_clock_mhz",
                  "gpu_temp_c", "gpu_throttle", "time_trusted", "time_flags", "time_samples_s", "time_cpu_samples_s",
                  "time_rounds_s", "time_rounds_flags", "time_wait_samples_s", "time_contended", "time_fault_samples",
                  "time_calibration_samples_s", "time_slow", "time_used", "time_host_busy_samples",
                  "fidelity_out_rel_error", "fidelity_out_rel_error_p50",
                  "fidelity_out_rel_error_p90", "fidelity_mass_dropped", "fidelity_mass_dropped_p90", "fidelity_kl",
                  "fidelity_topk_out_rel_error", "fidelity_ppl", "fidelity_rows", "fidelity_s"]


# Nullable dtypes of the metric columns: a missing value is NA, never NaN or 0 standing in for it.
NULLABLE_DTYPES = {
    **dict.fromkeys(("window", "segment", "sinks", "stride", "globals", "topk", "kv_heads", "q_len", "kv_len", "bytes",
                     "time_n_samples", "time_number_per_sample", "peak_mem_bytes", "mask_mem_bytes", "error_seq_len",
                     "error_batch", "error_heads"), "Int64"),
    **dict.fromkeys(("setup_s", "mask_s", "time_s_median", "time_s_iqr", "time_s_min", "time_s_max", "flops", "flops_per_s",
                     "ceiling_flops_per_s", "ceiling_fraction", "bytes_per_s", "bandwidth_bytes_per_s",
                     "bandwidth_fraction", "rel_error", "grad_rel_error", "wall_s", "finished_at"), "Float64"),
    **dict.fromkeys(("time_noisy", "error_on_twin", "isolated", "time_trusted"), "boolean"),
    **dict.fromkeys(("calibration_s", "sync_s", "host_busy", "gpu_temp_c", "time_budget_s"), "Float64"),
    **dict.fromkeys(("threads", "torch_threads", "attempts", "gpu_sm_clock_mhz", "inputs_layer", "fidelity_rows"),
                    "Int64"),
    **dict.fromkeys(("fidelity_out_rel_error", "fidelity_out_rel_error_p50", "fidelity_out_rel_error_p90",
                     "fidelity_mass_dropped", "fidelity_mass_dropped_p90", "fidelity_kl", "fidelity_topk_out_rel_error",
                     "fidelity_ppl", "fidelity_s"), "Float64"),
}


COLUMNS = ["run_id", "case_id", *CASE_COLUMNS, *METRIC_COLUMNS]


def rows_to_frame(rows: list[dict]) -> pd.DataFrame:
    cols = COLUMNS
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    for col, dtype in NULLABLE_DTYPES.items():
        df[col] = pd.array(df[col].tolist(), dtype=dtype)
    return df


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """A table read from disk (any readable version) with every current column, in order; missing ones NA."""
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = pd.array([None] * len(df), dtype=NULLABLE_DTYPES.get(col, "object"))
    # rows before version 5 were measured on random inputs
    df["inputs"] = df["inputs"].where(df["inputs"].notna(), "random")
    # rows before version 3 are square multi-head cases
    for col, source in (("kv_heads", "heads"), ("q_len", "seq_len"), ("kv_len", "seq_len")):
        df[col] = df[col].fillna(pd.Series(pd.array(df[source].tolist(), dtype="Int64"), index=df.index))
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


LIST_COLUMNS = ("time_samples_s", "time_cpu_samples_s", "time_rounds_s", "time_wait_samples_s", "time_contended",
                "time_fault_samples", "time_calibration_samples_s", "time_slow", "time_used",
                "time_host_busy_samples")  # raw samples: a list per row (JSON text in the CSV)


def floats(values) -> np.ndarray:
    """A column (a Series, or any sequence) as a float64 array: NaN for what is missing, NA or not a
    number (nullable and object columns included)."""
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)

