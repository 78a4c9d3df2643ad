"""The one git helper: provenance (commit, dirty flag) and the CI gate (refs, worktrees, messages)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.core.errors import InputError

HARNESS_ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout holding harness/


def git(cwd: Path, *args: str, check: bool = True, timeout_s: float = 120) -> str | None:
    """``git ARGS`` in ``cwd``; stdout stripped. On failure: InputError when ``check``, else None."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        if check:
            raise InputError(f"git {' '.join(args)} failed in {cwd}: {exc}; hint: is git installed?") from None
        return None
    if out.returncode != 0:
        if check:
            raise InputError(f"git {' '.join(args)} failed in {cwd}: {out.stderr.strip() or out.stdout.strip()}")
        return None
    return out.stdout.strip()
