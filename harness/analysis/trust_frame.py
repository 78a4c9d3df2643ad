"""A results frame's trust columns read back: ``time_trusted`` as True, False or None (not assessed:
rows written before trust flags, cells that did not run), ``time_flags`` as a list of reasons, which
ok cells are untrusted, and the count of cells by reason. Pure functions of frames and cells.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd


def trusted_value(v) -> bool | None:
    """One ``time_trusted`` cell as True, False or None (not assessed): nullable booleans, NumPy
    bools, NaN and the text a CSV round trip leaves all read the same."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        low = v.strip().lower()
        return True if low in ("true", "1", "yes") else False if low in ("false", "0", "no") else None
    return bool(v)


def parse_flags(v) -> list[str]:
    """One ``time_flags`` cell as a list of reasons: a JSON list as text (the stored form), a list,
    or "" / NA for none. Text that is not a JSON list is one reason."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return []
    if isinstance(v, str):
        if not v.strip():
            return []
        try:
            parsed = json.loads(v)
        except ValueError:
            return [v.strip()]
        v = parsed if isinstance(parsed, list) else [parsed]
    if isinstance(v, (list, tuple, np.ndarray)):
        return [str(x).strip() for x in v if x is not None and str(x).strip()]
    return [str(v)]


# "host busy 0.61 > 0.25": a reason with no ":" ends where its measured value and comparison begin.
_VALUE_COMPARISON = re.compile(r"\s+[-+]?(?:\d|\.\d)[^\s]*\s*(?:[<>]=?|\u2264|\u2265)")


def flag_reason(flag: str) -> str:
    """The kind of a flag, for counting: the text before its first ":" ("noisy: IQR/median 0.23 > 0.1"
    -> "noisy"), or, without one, the words before a "value > threshold" comparison ("host busy 0.61 >
    0.25" -> "host busy"), or else the whole flag."""
    head = flag.split(":", 1)[0].strip() if ":" in flag else flag.strip()
    if ":" not in flag:
        m = _VALUE_COMPARISON.search(head)
        if m and m.start() > 0:
            head = head[:m.start()].strip()
    return head or flag.strip()


def untrusted_mask(frame: pd.DataFrame) -> np.ndarray:
    """True for ok cells whose time was assessed and not trusted; False for every other cell
    (trusted, not assessed, not ok). A frame without ``time_trusted`` has no untrusted cell."""
    if "time_trusted" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    ok = (frame["status"] == "ok").to_numpy()
    return np.array([trusted_value(v) is False for v in frame["time_trusted"]], dtype=bool) & ok


def trust_summary(frame: pd.DataFrame) -> dict:
    """How far the ok cells of a frame can be trusted: ``measured`` (ok cells), ``trusted``,
    ``untrusted``, ``not_assessed`` and ``reasons``, a list of (reason, untrusted cells with it) by
    count then name, where a reason is ``flag_reason`` of each flag. An untrusted cell with no flag
    counts as "no reason recorded"."""
    ok = frame[frame["status"] == "ok"]
    values = [trusted_value(v) for v in ok["time_trusted"]] if "time_trusted" in ok.columns else [None] * len(ok)
    flags = [parse_flags(f) for f in ok["time_flags"]] if "time_flags" in ok.columns else [[]] * len(ok)
    counts: dict[str, int] = {}
    for t, fl in zip(values, flags):
        if t is False:
            for reason in sorted({flag_reason(f) for f in fl}) or ["no reason recorded"]:
                counts[reason] = counts.get(reason, 0) + 1
    return {"measured": len(values), "trusted": sum(t is True for t in values),
            "untrusted": sum(t is False for t in values), "not_assessed": sum(t is None for t in values),
            "reasons": sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
