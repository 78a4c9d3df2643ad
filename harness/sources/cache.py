"""The on-disk cache of captured attention inputs, and the hashes that key it.

Entries live under ``$XDG_CACHE_HOME/attnbench/sources/`` (default ``~/.cache``), one folder per
(source, model sha256, text sha256, N, code version). Every file is written to a temporary name and
moved into place (``os.replace``), so an interrupted write (Ctrl-C included) leaves no broken entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from harness.core.errors import InputError


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/attnbench/sources``; an unset or relative XDG_CACHE_HOME means ``~/.cache``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "attnbench" / "sources"


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_atomic(path: Path, write) -> None:
    """``write(tmp_path)`` fills a temporary file beside ``path``, which then replaces ``path`` in one
    step; on any exception (KeyboardInterrupt too) the temporary file is removed and nothing is left."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cache folder {str(path.parent)!r} is not writable ({exc.strerror}); "
                         "hint: set XDG_CACHE_HOME to a writable folder") from None
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    write_atomic(path, lambda tmp: torch.save({k: t.contiguous() for k, t in tensors.items()}, tmp))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def save_json(path: Path, data: dict) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
    write_atomic(path, write)


def load_json(path: Path) -> dict | None:
    """The JSON object at ``path``; None when there is none or it cannot be read (a stale or foreign file)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
