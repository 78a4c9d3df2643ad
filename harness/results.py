"""Run folders: journal (crash-safe), tidy Parquet/CSV, run.json with provenance, and the loader."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

SCHEMA_VERSION = 1
JOURNAL = "journal.jsonl"
RUN_JSON = "run.json"
PARQUET = "results.parquet"
CSV = "results.csv"


def new_run_id(label: str = "") -> str:
    """Sortable by time: 20261127T210501Z-quick-<pid>."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{label}-{os.getpid()}" if label else f"{stamp}-{os.getpid()}"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: str) -> dict:
    """Where and with what a run was made. Probes hardware, so call it at run time, never at import."""
    import torch

    from harness import __version__

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "attnbench_version": __version__,
        "torch_version": torch.__version__,
        "xformers_version": _version("xformers"),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" and torch.cuda.is_available() else cpu_model(),
        "cuda_version": torch.version.cuda,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
    }


ENVIRONMENT_KEYS = ("torch_version", "xformers_version", "python_version", "device", "device_name", "cpu_model",
                    "torch_num_threads")


def environment_fingerprint(prov: dict) -> dict:
    """The parts of provenance that must match for a resumed run to be comparable."""
    return {k: prov.get(k) for k in ENVIRONMENT_KEYS}


class Journal:
    """Append-only JSON lines, flushed and fsynced per row, so kill -9 loses at most the case in progress."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh = None

    def read(self, repair: bool = False) -> list[dict]:
        """Rows written so far; ``repair`` cuts off a torn last line left by a killed process."""
        if not self.path.exists():
            return []
        rows, good_bytes = [], 0
        with open(self.path, "rb") as fh:
            for raw in fh:
                try:
                    rows.append(json.loads(raw))
                except json.JSONDecodeError:
                    break  # a torn last line from a killed process: drop it and what follows
                good_bytes += len(raw)
        if repair and good_bytes < self.path.stat().st_size:
            with open(self.path, "r+b") as fh:
                fh.truncate(good_bytes)
        return rows

    def append(self, row: dict) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps(row, default=_json_default) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_json(path: Path, data: dict) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(tmp, path)


def write_tables(run_dir: Path, rows: list[dict]) -> None:
    """Tidy Parquet (raw samples as a list column) and CSV (samples as JSON text)."""
    df = rows_to_frame(rows)
    df.to_parquet(run_dir / PARQUET, index=False)
    csv = df.copy()
    csv["time_samples_s"] = csv["time_samples_s"].map(lambda s: json.dumps(list(s)) if s is not None else "")
    csv.to_csv(run_dir / CSV, index=False)


# Column order of the tidy table; metric columns are null (not NaN, not 0) when a case did not run.
CASE_COLUMNS = ["variant", "pattern", "causal", "window", "segment", "device", "dtype", "batch", "heads", "seq_len",
                "head_dim", "pass", "params"]
METRIC_COLUMNS = ["status", "reason", "setup_s", "time_s_median", "time_s_iqr", "time_s_min", "time_s_max",
                  "time_n_samples", "time_number_per_sample", "time_noisy", "peak_mem_bytes", "peak_mem_method",
                  "flops", "flops_per_s", "ceiling_flops_per_s", "ceiling_fraction", "rel_error", "error_seq_len",
                  "error_batch", "error_heads", "error_on_twin", "isolated", "wall_s", "finished_at",
                  "time_samples_s"]


# Nullable dtypes of the metric columns: a missing value is NA, never NaN or 0 standing in for it.
NULLABLE_DTYPES = {
    **dict.fromkeys(("window", "segment", "time_n_samples", "time_number_per_sample", "peak_mem_bytes",
                     "error_seq_len", "error_batch", "error_heads"), "Int64"),
    **dict.fromkeys(("setup_s", "time_s_median", "time_s_iqr", "time_s_min", "time_s_max", "flops", "flops_per_s",
                     "ceiling_flops_per_s", "ceiling_fraction", "rel_error", "wall_s", "finished_at"), "Float64"),
    **dict.fromkeys(("time_noisy", "error_on_twin", "isolated"), "boolean"),
}


def rows_to_frame(rows: list[dict]) -> pd.DataFrame:
    cols = ["run_id", "case_id", *CASE_COLUMNS, *METRIC_COLUMNS]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    for col, dtype in NULLABLE_DTYPES.items():
        df[col] = pd.array(df[col].tolist(), dtype=dtype)
    return df


def load_run(run_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """A run as (tidy DataFrame, run.json metadata). Reads the journal when the run did not finish.

    Missing values are pandas' NA (nullable dtypes): a case that did not run has a status and a
    reason, and no number standing in for its metrics.
    """
    from harness.patterns import InputError

    run_dir = Path(run_dir)
    meta_path = run_dir / RUN_JSON
    if not meta_path.exists():
        raise InputError(f"{run_dir} is not an attnbench run: no {RUN_JSON} in it; hint: pass a folder "
                         "made by `attnbench sweep`, e.g. results/<run-id>")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{meta_path} is not valid JSON ({exc}); the run folder is damaged") from None
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(f"{meta_path} has schema_version {version!r}; this attnbench reads {SCHEMA_VERSION}")
    if (run_dir / PARQUET).exists() and meta.get("status") == "complete":
        df = pd.read_parquet(run_dir / PARQUET, dtype_backend="numpy_nullable")
        df["time_samples_s"] = df["time_samples_s"].map(lambda s: None if s is None else list(s))
    else:
        df = rows_to_frame(Journal(run_dir / JOURNAL).read())
    return df, meta
