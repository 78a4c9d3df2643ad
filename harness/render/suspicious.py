"""The report's list of suspicious speedups (``harness.analysis.suspicious``), from a prepared frame
(``harness.render.prepare.prepare``): one row per flagged cell in milliseconds with a sentence, and
the section as a context dict with its escaped HTML table, for the page to place."""

from __future__ import annotations

import pandas as pd

from harness.analysis.suspicious import SUSPICIOUS_FACTOR, suspicious_speedups
from harness.render.prepare import GROUP_KEYS
from harness.render.tables import Col, html_table
from harness.render.units import fmt_bool, fmt_num, fmt_text, to_ms

KEYS = [*GROUP_KEYS, "seq_len"]


def suspicious_table(prep: pd.DataFrame, factor: float = SUSPICIOUS_FACTOR) -> pd.DataFrame:
    """Every cell whose variant is more than ``factor`` x faster than the best other variant on the
    same case (same series, shape, pattern, causal, pass and N), with both times in ms and ``text``:
    "sdpa is 42x faster than local at N = 1024 (0.01 ms against 0.42 ms): check its output and timing"."""
    cols = [*KEYS, "variant", "time_ms", "other_variant", "other_time_ms", "ratio", "text"]
    flags = suspicious_speedups(prep, KEYS, factor)
    if flags.empty:
        return pd.DataFrame(columns=cols)
    flags["time_ms"] = to_ms(flags["time_s_median"].astype("float64"))
    flags["other_time_ms"] = to_ms(flags["other_time_s_median"].astype("float64"))
    flags["text"] = [f"{r['variant']} is {r['ratio']:.0f}x faster than {r['other_variant']}, the best other "
                     f"variant, on {r['pattern_label']}{' causal' if r['causal'] else ''} {r['pass']} at N = "
                     f"{int(r['seq_len'])} ({fmt_num(r['time_ms'])} ms against {fmt_num(r['other_time_ms'])} ms): "
                     "check its output and its timing" for r in flags.to_dict("records")]
    return flags[cols].reset_index(drop=True)


def suspicious_section(prep: pd.DataFrame, factor: float = SUSPICIOUS_FACTOR) -> dict:
    """What the report shows of the suspicious speedups: ``n_suspicious``, ``suspicious_lines`` (the
    sentences), ``suspicious_intro`` (what a flag means) and ``suspicious`` (an escaped HTML table)."""
    table = suspicious_table(prep, factor)
    multi = prep["series"].nunique() > 1 if "series" in prep.columns else False
    cols = [*([Col("series", "run")] if multi else []), Col("shape", "shape"), Col("pattern_label", "pattern"),
            Col("causal", "causal", fmt_bool), Col("pass", "pass"), Col("seq_len", "N", fmt_text, True),
            Col("variant", "variant"), Col("time_ms", "time (ms)", fmt_num, True),
            Col("other_variant", "best other"), Col("other_time_ms", "its time (ms)", fmt_num, True),
            Col("ratio", "ratio (x)", fmt_num, True)]
    return {"n_suspicious": len(table), "suspicious_lines": table["text"].tolist(),
            "suspicious_intro": f"A variant more than {factor:g}x faster than the best other variant on the same "
                                "case is listed for a look: a result computed ahead of time, a skipped part of "
                                "the pattern or a timing that missed the work can look like this. A kernel that "
                                "does less work by design can be that fast too.",
            "suspicious": html_table(table, cols)}
