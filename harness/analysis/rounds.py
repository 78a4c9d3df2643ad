"""Rounds: a cell measured several times over a run, the fastest round kept (``--rounds``).

A machine's speed drifts over minutes (on this project's 2-core VM, one cell read 8, 12, 17 and 23 ms
at different times on a quiet machine, while the calibration matmul timed beside it moved about 10%): a
cell timed once, for a fraction of a second, reports whichever state the machine was in. With
``rounds`` > 1, the sweep measures every cell again after all cells have been measured once, round
after round (asv's ``rounds``, pyperf's several processes). Load and drift only ever add time, so the
row keeps its fastest round's whole measurement (samples, spread, rates and the evidence beside it:
calibration and host load), as a cross-cell re-measure keeps the faster of two
(timeit's and BenchmarkTools' minimum, applied to rounds rather than samples). ``time_rounds_s``
keeps every round's median, so the trust flags can ask whether the fastest round was reproduced
(harness.analysis.trust: "unreproduced"), and a lone lucky round is not trusted.

Pure functions of rows.
"""

from __future__ import annotations

# Fields that belong to the row written, not to the measurement (make_row sets them again).
_ROW_FIELDS = ("run_id", "case_id", "isolated", "wall_s", "finished_at", "remeasured_for")


def rounds_done(row: dict) -> int:
    """Rounds of measurement that a row holds (1 for a row measured once)."""
    medians = row.get("time_rounds_s")
    return len(medians) if isinstance(medians, list) and medians else 1


def keep_faster(old: dict, new: dict) -> dict:
    """Of two measurements of a cell, the one to keep (load and drift only add time): ``new`` when it
    is ok and faster, else ``old``; either without the fields of the row it was written in."""
    faster = new.get("status") == "ok" and new.get("time_samples_s") and new["time_s_median"] < old["time_s_median"]
    return {k: v for k, v in (new if faster else old).items() if k not in _ROW_FIELDS}


def merge_round(old: dict, new: dict) -> dict:
    """The metrics of ``old`` (an ok row) with the measurement ``new`` as one more round.

    The faster round's measurement is kept whole (``keep_faster``: its median, samples, rates,
    calibration and host load belong together), by its median alone: a fastest round that its own
    evidence flags (noisy, above the ceiling, ...) makes the row untrusted rather than letting a slower
    round stand in for it. ``time_rounds_s`` gains the new round's median and attempts add up. A failed
    round (not ok) leaves the measurement as it was, its attempts counted (a row in rounds left with
    one median is flagged)."""
    out = {**keep_faster(old, new), "attempts": int(old.get("attempts") or 1) + int(new.get("attempts") or 1)}
    if new.get("status") == "ok" and new.get("time_samples_s"):
        out["time_rounds_s"] = list(old.get("time_rounds_s") or [old["time_s_median"]]) + [new["time_s_median"]]
    return out
