"""Run folders: journal (crash-safe), tidy Parquet/CSV, run.json with provenance, and the loader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


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
