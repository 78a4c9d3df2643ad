"""Rounds: a cell measured several times over a run, its samples pooled (``--rounds``).

A machine's speed drifts over minutes (on this project's 2-core VM, one cell read 8, 12, 17 and 23 ms
at different times on a quiet machine, while the calibration matmul timed beside it moved about 10%): a cell timed once,
for a fraction of a second, reports whichever state the machine was in. With ``rounds`` > 1, the
sweep measures every cell again after all cells have been measured once, round after round (asv's
``rounds``, pyperf's several processes); each round's samples join the row's, so the row's median and
spread cover minutes, not a fraction of a second, and rounds that disagree show as a noisy (or bimodal)
row instead of passing as quiet. ``time_rounds_s`` keeps each round's median.

Pure functions of rows (the pooled statistics are harness.bench.timing's ``Timing``).
"""

from __future__ import annotations

from harness.bench.timing import Timing

# Fields that belong to the row written, not to the measurement (make_row sets them again).
_ROW_FIELDS = ("run_id", "case_id", "isolated", "wall_s", "finished_at")
# Rates scale with 1 / median; the evidence of contention keeps the worst of the rounds.
_RATES = ("flops_per_s", "ceiling_fraction", "bytes_per_s", "bandwidth_fraction")
_WORST = ("calibration_s", "host_busy")


def rounds_done(row: dict) -> int:
    """Rounds of measurement that a row holds (1 for a row measured once)."""
    medians = row.get("time_rounds_s")
    return len(medians) if isinstance(medians, list) and medians else 1


def merge_round(old: dict, new: dict) -> dict:
    """The metrics of ``old`` (an ok row) with the measurement ``new`` pooled in as one more round.

    Samples (wall and CPU) are pooled; median, IQR, min, max and noisiness are recomputed from them;
    rates are rescaled to the pooled median; calibration and host load keep the worst round's; calls
    per sample the smallest (so "few calls" stays conservative); attempts add up. A failed round (not
    ok) leaves the measurement as it was, its attempts counted."""
    keep = {k: v for k, v in old.items() if k not in _ROW_FIELDS}
    attempts = int(old.get("attempts") or 1) + int(new.get("attempts") or 1)
    if new.get("status") != "ok" or not new.get("time_samples_s"):
        return {**keep, "attempts": attempts}
    medians = list(old.get("time_rounds_s") or [old["time_s_median"]]) + [new["time_s_median"]]
    samples = [float(s) for s in (old.get("time_samples_s") or []) + list(new["time_samples_s"])]
    old_cpu, new_cpu = old.get("time_cpu_samples_s"), new.get("time_cpu_samples_s")
    cpu = list(old_cpu) + list(new_cpu) if old_cpu is not None and new_cpu is not None else None
    number = min(int(old.get("time_number_per_sample") or 1), int(new.get("time_number_per_sample") or 1))
    pooled = Timing(samples_s=samples, number_per_sample=number, cpu_samples_s=cpu)
    scale = old["time_s_median"] / pooled.median if pooled.median > 0 else None
    out = {**keep, **pooled.fields(), "time_rounds_s": medians, "attempts": attempts}
    for key in _RATES:
        if old.get(key) is not None and scale is not None:
            out[key] = old[key] * scale
    for key in _WORST:
        values = [v for v in (old.get(key), new.get(key)) if isinstance(v, (int, float))]
        if values:
            out[key] = max(values)
    for key in ("gpu_sm_clock_mhz", "gpu_temp_c", "gpu_throttle"):  # the latest round's device state
        if new.get(key) is not None:
            out[key] = new[key]
    return out
