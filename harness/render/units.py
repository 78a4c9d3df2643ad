"""Display units and number formatting for every report, table and command output.

Stored results stay in base units (seconds, bytes, FLOP/s, fractions); this module is the one place
that turns them into what people read: milliseconds, MiB (2**20 bytes), GFLOP/s (10**9 FLOP/s),
percent, and the short text forms of times, ratios and intervals. The ``to_*`` helpers work on
scalars, NumPy arrays and pandas Series alike.
"""

from __future__ import annotations

import math

import pandas as pd

MS = 1e3  # milliseconds per second


MIB = 2**20  # bytes per MiB


GIGA = 1e9  # FLOP/s per GFLOP/s


PCT = 100.0  # percent per unit fraction


# ---- conversions (base unit -> display unit) ----------------------------------------------------
def to_ms(seconds):
    return seconds * MS


def to_mib(nbytes):
    return nbytes / MIB


def to_giga(value):
    return value / GIGA


def to_pct(fraction):
    return fraction * PCT


# ---- text forms ---------------------------------------------------------------------------------
def fmt_time(seconds) -> str:
    """A time in seconds with the unit that keeps three significant figures: ``1.23 ms``, ``456 us``."""
    if seconds is None or pd.isna(seconds):
        return "-"
    s = float(seconds)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= scale or unit == "ns":
            v = s / scale
            decimals = max(0, 2 - int(math.floor(math.log10(v)))) if v > 0 else 0
            return f"{v:.{decimals}f} {unit}"


def fmt_duration(seconds: float) -> str:
    """A run's length: seconds below two minutes, minutes above."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def fmt_ratio(value) -> str:
    return "-" if value is None or pd.isna(value) else f"{float(value):.3f}"


def fmt_ci(lo, hi) -> str:
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return "-"
    return f"[{float(lo):.3f}, {float(hi):.3f}]"


def fmt_num(v) -> str:
    """Three significant figures without exponent for ordinary magnitudes; blank for missing."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)) or v is pd.NA:
        return ""
    v = float(v)
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 0.01:
        return f"{v:.3g}"
    return f"{v:.2e}"


def fmt_sci(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{float(v):.2e}"


def fmt_exp(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{float(v):.2f}"


def fmt_bool(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return "yes" if bool(v) else "no"


def fmt_text(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def fmt_compact(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}: {fmt_compact(x)}" for k, x in v.items()) or "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_compact(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return fmt_text(v)
