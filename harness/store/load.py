"""The one run loader (run.json, then the Parquet table or, for an unfinished run, the journal), and
the writer of a run's tidy tables (Parquet with raw samples as a list column, CSV).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.core.errors import InputError
from harness.store.journal import Journal
from harness.store.schema import (
    CSV,
    JOURNAL,
    PARQUET,
    READABLE_VERSIONS,
    RUN_JSON,
    conform,
    rows_to_frame,
)


def write_tables(run_dir: Path, rows: list[dict]) -> None:
    """Tidy Parquet (raw samples as a list column) and CSV (samples as JSON text)."""
    df = rows_to_frame(rows)
    df.to_parquet(run_dir / PARQUET, index=False)
    csv = df.copy()
    csv["time_samples_s"] = csv["time_samples_s"].map(lambda s: json.dumps(list(s)) if s is not None else "")
    csv.to_csv(run_dir / CSV, index=False)


def load_run(run_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """A run as (tidy DataFrame, run.json metadata). Reads the journal when the run did not finish.

    Missing values are pandas' NA (nullable dtypes): a case that did not run has a status and a
    reason, and no number standing in for its metrics.
    """
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
    if version not in READABLE_VERSIONS:
        raise InputError(f"{meta_path} has schema_version {version!r}; this attnbench reads "
                         f"{', '.join(map(str, READABLE_VERSIONS))}; hint: use the attnbench that wrote it")
    if (run_dir / PARQUET).exists() and meta.get("status") == "complete":
        df = pd.read_parquet(run_dir / PARQUET, dtype_backend="numpy_nullable")
        df["time_samples_s"] = df["time_samples_s"].map(lambda s: None if s is None else list(s))
    else:
        df = rows_to_frame(Journal(run_dir / JOURNAL).read())
    return conform(df), meta
