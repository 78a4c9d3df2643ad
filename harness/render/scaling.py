"""The report's scaling tables, from a prepared frame (``harness.render.prepare.prepare``): fitted
exponents with the measured range and a note, crossovers as a sentence, and every cell against a
baseline variant in milliseconds and MiB. The figures behind them are ``harness.analysis.scaling``'s,
grouped by the report's panels (series, shape, pattern, causal, pass)."""

from __future__ import annotations

import pandas as pd

from harness.analysis.scaling import baseline_ratios, exponent_fits, order_changes
from harness.render.prepare import GROUP_KEYS
from harness.render.units import to_mib, to_ms

EXPONENT_KEYS = ["series", "shape", "variant", "pattern", "pattern_label", "causal", "pass"]


def _cells(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _exponent_note(fit: dict) -> str:
    """What a reader of one exponent must know: what was left out of a fit, and why a slope is missing."""
    notes = []
    if fit["mem_zero"]:
        notes.append("cells with 0 bytes of peak memory left out of the memory fit")
    if fit["n_points"] < 2:
        notes.append("n/a: one sequence length, no slope")
    untrusted = fit["untrusted_ns"]
    if untrusted:
        left = fit["n_points"] - len(set(untrusted))
        notes.append(f"{_cells(len(untrusted), 'untrusted cell')} (N = {', '.join(map(str, untrusted))}) left "
                     "out of the time fit" + ("; too few trusted sizes for a time slope"
                                              if left < 2 <= fit["n_points"] else ""))
    if fit["wrong_ns"]:
        notes.append(f"{_cells(len(fit['wrong_ns']), 'wrong cell')} (N = {', '.join(map(str, fit['wrong_ns']))}) "
                     "left out: output not what the pattern defines")
    failed = [n for n in fit["failed_ns"] if n not in fit["wrong_ns"]]
    if failed:
        notes.append("not ok at N = " + ", ".join(map(str, failed)))
    return "; ".join(notes)


def fit_exponents(prep: pd.DataFrame) -> pd.DataFrame:
    """Time and memory exponents against N per series, shape, variant, pattern, causal and pass
    (``harness.analysis.scaling.exponent_fits``), with ``range`` ("N = 256..2048 (4 points)") and a
    ``note`` naming the cells left out (untrusted, wrong) and why a slope is n/a. Fewer than two
    distinct sequence lengths give NaN and a note, never an error."""
    cols = [*EXPONENT_KEYS, "time_exponent", "mem_exponent", "n_min", "n_max", "n_points", "range", "untrusted",
            "note"]
    fits = exponent_fits(prep, EXPONENT_KEYS)
    fits["range"] = [f"N = {lo}..{hi} ({n} points)" if n > 1 else f"N = {lo} only"
                     for lo, hi, n in zip(fits["n_min"], fits["n_max"], fits["n_points"])]
    fits["note"] = [_exponent_note(f) for f in fits.to_dict("records")]
    return fits[cols]


def crossovers(prep: pd.DataFrame) -> pd.DataFrame:
    """Where the faster of two variants changes with N, per panel (``harness.analysis.scaling.
    order_changes``), with ``text``: "local is faster than naive from N = 1024 (slower at N = 512)",
    how often the order changes when more than once, and the untrusted and wrong cells left out."""
    cols = [*GROUP_KEYS, "faster", "slower", "from_n", "slower_at_n", "flips", "untrusted", "wrong", "text"]
    cross = order_changes(prep, GROUP_KEYS)
    texts = []
    for r in cross.to_dict("records"):
        text = f"{r['faster']} is faster than {r['slower']} from N = {r['from_n']} (slower at N = {r['slower_at_n']})"
        if r["flips"] > 1:
            text += f"; the order changes {r['flips']} times over the measured range"
        if r["untrusted"]:
            text += f"; {_cells(r['untrusted'], 'untrusted cell')} left out"
        if r["wrong"]:
            text += f"; {_cells(r['wrong'], 'wrong cell')} left out"
        texts.append(text)
    cross["text"] = texts
    return cross[cols]


def relative_to_baseline(prep: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Speedup and memory saving of every other variant's cell against the baseline's cell of the same
    panel and N (``harness.analysis.scaling.baseline_ratios``), with both sides' time in ms and peak
    memory in MiB. NaN where either did not run; ``status`` and ``baseline_status`` say why."""
    keys = [*GROUP_KEYS, "seq_len"]
    cols = [*keys, "facet_row", "variant", "variant_plot", "status", "baseline_status", "time_ms", "baseline_time_ms",
            "peak_mem_mib", "baseline_peak_mem_mib", "speedup", "memory_saving"]
    rel = baseline_ratios(prep, baseline, keys)
    if rel.empty:
        return pd.DataFrame(columns=cols)
    rel["baseline_time_ms"] = to_ms(rel["baseline_time_s_median"].astype("float64"))
    rel["baseline_peak_mem_mib"] = to_mib(rel["baseline_peak_mem_bytes"].astype("float64"))
    return rel[cols].reset_index(drop=True)
