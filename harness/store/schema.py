"""The tidy table's schema: file names of a run folder, columns and their nullable dtypes, versions.

Schema versions (``run.json``'s ``schema_version``):

* 1: the first release.
* 2: the engine times the prepared kernel alone; new columns ``mask_s`` (building per-shape
  constants: masks, block masks) and ``mask_mem_bytes`` (what they hold), and ``peak_mem_bytes``
  now counts those constants plus the call's own peak. Version-1 runs load with both new columns NA.
  Later in version 2 (nullable additions, so no new version): ``node`` (hostname), ``node_id`` (the Ray
  node id, NA for the local executors) and ``device_name`` (GPU or CPU model) of the process that
  measured the row; runs written before load with them NA.
* 3: workloads beyond square multi-head attention: case columns ``kv_heads``, ``q_len``, ``kv_len``
  (= ``seq_len``, the key/value length) and ``doc_lens`` (JSON text, the document pattern's lengths);
  metric columns ``bytes`` (minimum memory traffic of the call), ``bytes_per_s``,
  ``bandwidth_bytes_per_s`` (the bandwidth ceiling) and ``bandwidth_fraction``. Older rows are square
  multi-head cases: they load with ``kv_heads`` = ``heads`` and ``q_len`` = ``kv_len`` = ``seq_len``.
  Also in version 3, the evidence of contention beside each time: ``time_cpu_samples_s`` (CPU time
  per call of each sample), ``calibration_s`` (the calibration kernel timed beside the row; see below),
  ``host_busy`` (other processes' CPU use over the timing, as a fraction of the cores), ``torch_threads``
  (torch's intra-op threads while timed; the case column ``threads`` is the swept value, NA: all cores),
  ``attempts`` (measurements of the cell), ``gpu_sm_clock_mhz``, ``gpu_temp_c``, ``gpu_throttle``; and
  the verdict on it: ``time_trusted`` (NA: not assessed, as in older runs) and ``time_flags`` (JSON
  text, the reasons; harness.analysis.trust). Later in version 3 (nullable): ``remeasured_for``, the
  cross-cell check that had the cell measured again at the end of the sweep (NA: it was not); such a
  row supersedes the case's earlier row in the journal. Also nullable: ``time_rounds_s``, each round's
  median when the sweep measured its cells in several rounds (``--rounds``; harness.analysis.rounds:
  the fastest round's measurement is the row's, or a clean one that agrees with it, ``remeasured_for``
  "round 2", ...; a cell its own evidence still flags at the end is measured again, up to ``retries``
  times, "round k (recheck: flags)"); NA for a cell measured once. Also nullable:
  ``time_wait_samples_s``, per sample the time per call the process's threads waited on a run queue for
  a CPU (Linux schedstat), and ``time_contended``, per sample whether that wait exceeded 5% of it
  (harness.bench.timing); the time statistics are of the clean samples (all when none is clean, then
  flagged ``contended``), ``time_samples_s`` keeps every raw one. NA where the kernel does not say.
  Also nullable: ``time_fault_samples``, per sample the minor page faults per call over its block
  (getrusage; harness.bench.heap: a call that faults maps fresh memory, and its time depends on the
  allocator's state), NA where not read. Also nullable: ``time_calibration_samples_s``, per sample a warm
  call of the calibration kernel timed right after its block; ``calibration_s`` is then their median
  beside the clean samples (in rows written before, one block of it timed right before the row's timing;
  NA here).
"""

from __future__ import annotations

import pandas as pd

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # older runs are migrated on load: missing columns are NA
JOURNAL = "journal.jsonl"
RUN_JSON = "run.json"
PARQUET = "results.parquet"
CSV = "results.csv"


# Column order of the tidy table; metric columns are null (not NaN, not 0) when a case did not run.
CASE_COLUMNS = ["variant", "pattern", "causal", "window", "segment", "doc_lens", "device", "dtype", "batch", "heads",
                "kv_heads", "seq_len", "q_len", "kv_len", "head_dim", "pass", "threads", "params"]


METRIC_COLUMNS = ["status", "reason", "setup_s", "mask_s", "time_s_median", "time_s_iqr", "time_s_min", "time_s_max",
                  "time_n_samples", "time_number_per_sample", "time_noisy", "peak_mem_bytes", "mask_mem_bytes", "peak_mem_method",
                  "flops", "flops_per_s", "ceiling_flops_per_s", "ceiling_fraction", "bytes", "bytes_per_s",
                  "bandwidth_bytes_per_s", "bandwidth_fraction", "rel_error", "error_seq_len",
                  "error_batch", "error_heads", "error_on_twin", "isolated", "node", "node_id", "device_name", "wall_s",
                  "finished_at",
                  "calibration_s", "host_busy", "torch_threads", "attempts", "remeasured_for", "gpu_sm_clock_mhz",
                  "gpu_temp_c", "gpu_throttle", "time_trusted", "time_flags", "time_samples_s", "time_cpu_samples_s",
                  "time_rounds_s", "time_wait_samples_s", "time_contended", "time_fault_samples",
                  "time_calibration_samples_s"]


# Nullable dtypes of the metric columns: a missing value is NA, never NaN or 0 standing in for it.
NULLABLE_DTYPES = {
    **dict.fromkeys(("window", "segment", "kv_heads", "q_len", "kv_len", "bytes", "time_n_samples", "time_number_per_sample", "peak_mem_bytes",
                     "mask_mem_bytes", "error_seq_len", "error_batch", "error_heads"), "Int64"),
    **dict.fromkeys(("setup_s", "mask_s", "time_s_median", "time_s_iqr", "time_s_min", "time_s_max", "flops", "flops_per_s",
                     "ceiling_flops_per_s", "ceiling_fraction", "bytes_per_s", "bandwidth_bytes_per_s",
                     "bandwidth_fraction", "rel_error", "wall_s", "finished_at"), "Float64"),
    **dict.fromkeys(("time_noisy", "error_on_twin", "isolated", "time_trusted"), "boolean"),
    **dict.fromkeys(("calibration_s", "host_busy", "gpu_temp_c"), "Float64"),
    **dict.fromkeys(("threads", "torch_threads", "attempts", "gpu_sm_clock_mhz"), "Int64"),
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
    # rows before version 3 are square multi-head cases
    for col, source in (("kv_heads", "heads"), ("q_len", "seq_len"), ("kv_len", "seq_len")):
        df[col] = df[col].fillna(pd.Series(pd.array(df[source].tolist(), dtype="Int64"), index=df.index))
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


LIST_COLUMNS = ("time_samples_s", "time_cpu_samples_s", "time_rounds_s", "time_wait_samples_s", "time_contended",
                "time_fault_samples", "time_calibration_samples_s")  # raw samples: a list per row (JSON text in the CSV)
