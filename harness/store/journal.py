"""Run folders: journal (crash-safe), tidy Parquet/CSV, run.json with provenance, and the loader.

Damage is survived and said, never silent: a journal line that is not a row (garbage, a JSON value that
is not a row object) is skipped with a warning naming the file and line, and every valid row around it
is kept; a torn last line (a process killed while writing it) is skipped, and cut off on repair.
Warnings go to the ``harness.store`` logger (printed on stderr when logging is not configured).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

IN_PROGRESS = "in_progress"  # the case being measured, so a resume after a crash can name it
ROW_KEYS = ("run_id", "case_id", "status")  # what makes a JSON object a journal row
MAX_LINE_WARNINGS = 10  # then one summary line
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


def row_problem(obj: object) -> str | None:
    """Why a parsed journal line is not a row (None when it is one)."""
    if not isinstance(obj, dict):
        return f"a JSON {_JSON_TYPES.get(type(obj), type(obj).__name__)}, not a row object"
    missing = [k for k in ROW_KEYS if not isinstance(obj.get(k), str) or not obj.get(k)]
    if missing:
        return f"an object without {', '.join(missing)}"
    return None


def _parse(raw: bytes) -> tuple[dict | None, str | None]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg} at column {exc.colno})"
    except (ValueError, RecursionError) as exc:  # bytes that are not UTF-8; absurd nesting
        return None, f"not JSON ({type(exc).__name__})"
    problem = row_problem(obj)
    return (None, problem) if problem else (obj, None)


class Journal:
    """Append-only JSON lines, flushed and fsynced per row, so kill -9 loses at most the case in progress."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh = None

    def read(self, repair: bool = False) -> list[dict]:
        """Every valid row. A damaged line is skipped with a warning (file and line number) and the rows
        after it are kept. ``repair`` cuts off a torn last line left by a killed process, and ends the
        file with a newline, so the next append starts a line of its own."""
        if not self.path.exists():
            return []
        rows, bad, end = [], 0, 0
        with open(self.path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                last_torn = not raw.endswith(b"\n")  # only the last line can lack its newline
                if not raw.strip():
                    end += len(raw)
                    continue
                row, problem = _parse(raw)
                if row is not None:
                    rows.append(row)
                    end += len(raw)
                elif last_torn:
                    self._torn(number, len(raw), end, repair)
                    break
                else:
                    bad += 1
                    end += len(raw)
                    if bad <= MAX_LINE_WARNINGS:
                        log.warning(f"{self.path} line {number}: skipped, {problem}; the other rows are kept")
        if bad > MAX_LINE_WARNINGS:
            log.warning(f"{self.path}: {bad - MAX_LINE_WARNINGS} more damaged lines skipped ({bad} in all)")
        if repair and end and not self.path.read_bytes().endswith(b"\n"):
            with open(self.path, "ab") as fh:  # a complete last row that only lacks its newline
                fh.write(b"\n")
        return rows

    def _torn(self, number: int, size: int, keep_bytes: int, repair: bool) -> None:
        if repair:
            with open(self.path, "r+b") as fh:
                fh.truncate(keep_bytes)
            log.warning(f"{self.path} line {number}: cut off a torn last line ({size} bytes, from a process "
                        "killed while writing it); that case runs again")
        else:
            log.warning(f"{self.path} line {number}: skipped a torn last line ({size} bytes; a killed run, or one "
                        "still writing)")

    def append(self, row: dict) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")
            if self._fh.tell() and not _ends_with_newline(self.path):
                self._fh.write("\n")  # never glue a row onto a line left without its newline
        try:
            self._fh.write(json.dumps(row, default=_json_default) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:  # a full disk: say which file (a torn last line is repaired on resume)
            exc.filename = exc.filename or str(self.path)
            raise

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


class InProgress:
    """The case being measured, written and fsynced before it starts, so that after a crash of the whole
    process (a segfault in a kernel run in-process) a resume can say which case it was."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / IN_PROGRESS

    def set(self, case_id: str) -> None:
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"case_id": case_id, "started_at": time.time(), "pid": os.getpid()}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def get(self) -> str | None:
        """The case id recorded, or None (none, or a file too damaged to say)."""
        try:
            case_id = json.loads(self.path.read_bytes()).get("case_id")
        except (OSError, ValueError, AttributeError):
            return None
        return case_id if isinstance(case_id, str) else None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_json(path: Path, data: dict) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(tmp, path)
