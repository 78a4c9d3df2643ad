"""An exception raised while measuring a case, as the row's status and one-line reason."""

from __future__ import annotations

import torch

from harness.core.errors import WrongOutput, one_line
from harness.run.alarm import CaseTimeout


def classify(exc: BaseException) -> tuple[str, str]:
    """(status, reason) for an exception raised while measuring a case."""
    reason = one_line(exc)
    if isinstance(exc, WrongOutput):
        return "wrong", str(exc)
    if isinstance(exc, CaseTimeout):
        return "timeout", str(exc)
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return "oom", reason
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower()):
        return "oom", reason
    return "error", reason
