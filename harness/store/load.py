"""The one run loader (run.json, then the Parquet table or, for an unfinished run, the journal), and
the writer of a run's tidy tables (Parquet with raw samples as a list column, CSV).

A damaged run folder loads what can be trusted and says what it left out: a Parquet table that
cannot be read is rebuilt from the journal; rows of another run, of cases outside the run's sweep, or
repeating a case already read are dropped with a warning that says how many.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd

from harness.core.errors import InputError, one_line
from harness.store.journal import Journal
from harness.store.schema import (
    CASE_COLUMNS,
    CSV,
    JOURNAL,
    LIST_COLUMNS,
    PARQUET,
    READABLE_VERSIONS,
    RUN_JSON,
    conform,
    rows_to_frame,
)

log = logging.getLogger(__name__)


def write_tables(run_dir: Path, rows: list[dict]) -> None:
    """Tidy Parquet (raw samples as a list column) and CSV (samples as JSON text), each written whole to a
    temporary file and renamed into place: a reader, or a full disk, never leaves a torn table."""
    df = rows_to_frame(rows)
    csv = df.copy()
    for col in LIST_COLUMNS:
        csv[col] = csv[col].map(lambda s: json.dumps(list(s)) if s is not None else "")
    for name, write in ((PARQUET, lambda p: df.to_parquet(p, index=False)), (CSV, lambda p: csv.to_csv(p, index=False))):
        tmp = run_dir / f".{name}.tmp"
        try:
            write(tmp)
            os.replace(tmp, run_dir / name)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            exc.filename = exc.filename or str(run_dir / name)
            raise


def read_meta(run_dir: Path, doing: str) -> dict:
    """A run folder's run.json as a dict, or a one-line InputError saying what is wrong with it."""
    meta_path = run_dir / RUN_JSON
    if not meta_path.exists():
        raise InputError(f"{doing} {run_dir}: it is not an attnbench run (no {RUN_JSON} in it); hint: pass a "
                         "folder made by `attnbench sweep`, e.g. results/<run-id>")
    try:
        meta = json.loads(meta_path.read_bytes())
    except (ValueError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise InputError(f"{doing} {run_dir}: {meta_path} is not valid JSON ({detail}); the run folder is "
                         f"damaged. Hint: its rows are in {JOURNAL}; start a new run to measure them again") from None
    except OSError as exc:
        raise InputError(f"{doing} {run_dir}: cannot read {meta_path} ({exc.strerror})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("sweep"), dict) \
            or not isinstance(meta.get("provenance"), dict):
        raise InputError(f"{doing} {run_dir}: {meta_path} is not a run description (no sweep or provenance "
                         "object in it); the run folder is damaged. Hint: start a new run")
    return meta


# Case columns of a row and the sweep keys that list their allowed values.
_SWEEP_AXES = {"variant": "variants", "pattern": "patterns", "causal": "causal", "dtype": "dtypes",
               "batch": "batch", "heads": "heads", "head_dim": "head_dims", "pass": "passes"}


def sweep_membership(sweep: Mapping) -> Callable[[Mapping], bool]:
    """Whether a row's case lies in a stored sweep (run.json's ``sweep``), by its case columns.

    Needs no variant registry: a run whose plug-in is gone, or made by an older attnbench, still loads.
    """
    allowed = {col: set(sweep[key]) for col, key in _SWEEP_AXES.items() if isinstance(sweep.get(key), list)}
    device = sweep.get("device")
    params = sweep.get("params") if isinstance(sweep.get("params"), dict) else {}
    kv_lens = set(sweep.get("kv_lens") or sweep.get("seq_lens") or [])  # the key/value lengths (seq_len column)
    q_lens = set(sweep.get("q_lens") or [])  # empty: square cases
    kv_heads = set(sweep.get("kv_heads") or [])  # empty: as many as query heads
    threads = set(sweep.get("threads") or [])  # empty: torch's default, no threads column

    def belongs(row: Mapping) -> bool:
        if device is not None and row.get("device") != device:
            return False
        if any(_scalar(row.get(col)) not in values for col, values in allowed.items()):
            return False
        n, q, kvh = (_scalar(row.get(c)) for c in ("seq_len", "q_len", "kv_heads"))
        if kv_lens and n not in kv_lens:
            return False
        q = n if q is None else q  # rows before schema 3 are square
        if (q not in q_lens) if q_lens else (q != n):
            return False
        if kvh not in (None, _scalar(row.get("heads"))) and kvh not in kv_heads:
            return False
        if (_scalar(row.get("threads")) not in threads) if threads else _scalar(row.get("threads")) is not None:
            return False
        given = params.get(row.get("variant")) or {}
        if given:
            try:
                row_params = json.loads(row.get("params") or "{}")
            except (TypeError, ValueError):
                return False
            return all(row_params.get(k) == v for k, v in given.items())
        return True

    return belongs


def _scalar(value):
    """A numpy or pandas scalar as the Python value run.json holds (NA as None)."""
    if value is pd.NA or value is None:
        return None
    return value.item() if hasattr(value, "item") else value


def select_rows(rows: Iterable[Mapping], run_id: str | None, belongs: Callable[[Mapping], bool],
                source: str) -> list[int]:
    """Positions of the rows that make up the run: its ``run_id`` (when known), a case of its sweep,
    and the first row of each case, or the last re-measurement of it (``remeasured_for`` set: the
    sweep measured it again after a cross-cell check). The others are dropped with one warning saying
    how many and why."""
    keep, seen = [], {}
    other_run = outside = repeated = 0
    for i, row in enumerate(rows):
        if run_id is not None and row.get("run_id") != run_id:
            other_run += 1
        elif not belongs(row):
            outside += 1
        elif row.get("case_id") in seen and isinstance(row.get("remeasured_for"), str):  # a re-measurement
            keep[seen[row.get("case_id")]] = i
        elif row.get("case_id") in seen:
            repeated += 1
        else:
            seen[row.get("case_id")] = len(keep)
            keep.append(i)
    dropped = [f"{n} {what}" for n, what in ((other_run, "of another run (run_id is not "
                                              f"{run_id!r})"), (outside, "of cases outside the run's sweep"),
                                             (repeated, "repeating a case already read")) if n]
    if dropped:
        log.warning(f"{source}: dropped {sum((other_run, outside, repeated))} rows ({'; '.join(dropped)}); "
                    f"kept {len(keep)}")
    return keep


def load_run(run_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """A run as (tidy DataFrame, run.json metadata). Reads the journal when the run did not finish, or
    when its Parquet table cannot be read.

    Missing values are pandas' NA (nullable dtypes): a case that did not run has a status and a
    reason, and no number standing in for its metrics.
    """
    run_dir = Path(run_dir)
    meta = read_meta(run_dir, "cannot load")
    meta_path = run_dir / RUN_JSON
    version = meta.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise InputError(f"{meta_path} has schema_version {version!r}; this attnbench reads "
                         f"{', '.join(map(str, READABLE_VERSIONS))}; hint: use the attnbench that wrote it")
    df = _read_parquet(run_dir) if meta.get("status") == "complete" else None
    if df is None:
        df = rows_to_frame(Journal(run_dir / JOURNAL).read())
        source = run_dir / JOURNAL
    else:
        source = run_dir / PARQUET
    run_id = meta.get("run_id") if isinstance(meta.get("run_id"), str) else None
    key_cols = [c for c in ("run_id", "case_id", *CASE_COLUMNS, "remeasured_for") if c in df.columns]
    keep = select_rows(df[key_cols].to_dict("records"), run_id, sweep_membership(meta["sweep"]), str(source))
    if len(keep) < len(df):
        df = df.iloc[keep].reset_index(drop=True)
    return conform(df), meta


def _read_parquet(run_dir: Path) -> pd.DataFrame | None:
    """The finished run's table, or None (with a warning) when it is missing or damaged and the journal
    can stand in for it."""
    path, journal = run_dir / PARQUET, run_dir / JOURNAL
    try:
        df = pd.read_parquet(path, dtype_backend="numpy_nullable")
    except (OSError, ValueError) as exc:  # pyarrow: ArrowInvalid is a ValueError, a bad footer an OSError
        reason = "it is missing" if not path.exists() else one_line(exc)
        if not journal.exists():
            raise InputError(f"cannot load {run_dir}: {path} cannot be read ({reason}) and there is no {JOURNAL} "
                             "to rebuild it from; hint: measure the run again") from None
        log.warning(f"{path} cannot be read ({reason}); rebuilt the table from {journal}")
        return None
    for col in LIST_COLUMNS:
        if col in df.columns:
            df[col] = df[col].map(lambda s: None if s is None else list(s))
    return df
