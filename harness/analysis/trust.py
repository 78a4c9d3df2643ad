"""How far each timing can be trusted: flags from the evidence kept beside it.

A row's flags (short reasons) come from its own evidence and from its neighbours:

* fewer than ``MIN_CALLS`` timed calls (one sample is never "not noisy");
* IQR / median above ``NOISE`` (the samples disagree);
* bimodal samples (two clusters: e.g. thread wake-ups), which a median would silently average;
* the rest of the host busy above ``HOST_BUSY`` of its cores while the row was timed;
* its calibration kernel (timed beside it: a warm call right after each of its timing blocks) more than
  ``SLOW_CALIBRATION`` slower than the run's best: the machine was slow then;
* a short call on several CPU threads (``slow_sync``) whose threads synchronized (``sync_s``, probed
  right after its timing: harness.bench.host.sync_probe) more than ``SLOW_SYNC`` slower than the run's
  best: the machine was in the state that slows such calls 1.3-1.7x while the calibration matmul does
  not show it (also "slow machine");
* a fraction of the matmul ceiling above ``CEILING``;
* most timed calls mapping fresh memory: more than ``FAULT_PAGES`` minor page faults per call (median
  of its samples; harness.bench.heap): the time then depends on the allocator's state, which earlier
  cells set, so the same cell reads two speeds (``--allocator steady``, the default, prevents it where
  glibc's malloc is pinnable); measuring again cannot clear it, so it starts no re-measurement;
* measured in rounds (``--rounds``, or re-checked at the end of the sweep), the round kept not
  reproduced within ``ROUNDS_AGREE`` by another round: a lone fast round may be a lucky moment, not
  the cell's speed;
* a fwd_bwd faster than its own fwd;
* a time that falls by more than ``DROP`` from one sequence length to the next larger one.

A row is trusted when it has no flag. Rows of runs written before the evidence existed are "not
assessed" (``time_trusted`` NA), never silently trusted. Pure functions of rows and run.json.
"""

from __future__ import annotations

import json
import math
import statistics

import pandas as pd

from harness.core.errors import InputError
from harness.store.schema import CASE_COLUMNS

MIN_CALLS = 5
NOISE = 0.10
HOST_BUSY = 0.25
SLOW_CALIBRATION = 1.15
CEILING = 1.05
DROP = 2.0
BIMODAL_GAP = 0.25  # a gap between sorted samples of this fraction of the median...
BIMODAL_SHARE = 0.2  # ...with at least this share of the samples on each side
ROUND_PREFIX = "round "  # ``remeasured_for`` of a row a round superseded ("round 2", ...; harness.analysis.rounds)
ROUNDS_AGREE = 1.15  # a cell measured in rounds (--rounds): another round this close to the kept one reproduces it
SLOW_MACHINE = "slow machine"  # the flag of a row whose calibration was slow
FAULT_PAGES = 256  # minor page faults per timed call (1 MiB of 4 KiB pages) above which a row is flagged
LASTING = ("page faults",)  # flags measuring again cannot clear: they start no re-measurement or re-check
RECHECK = "(recheck: "  # in ``remeasured_for`` of a row the sweep's end-of-run re-check measured again
SHORT_CALL_S = 10e-3  # a multi-threaded CPU call this short is largely its threads' synchronization ...
SLOW_STATE = 1.5  # ... even when read this much slower (the state read such calls 1.3-1.7x slow: a compromise)
SHORT_BELOW_S = SHORT_CALL_S * SLOW_STATE  # a multi-threaded CPU call read under this is judged by its sync probe
SLOW_SYNC = 1.15  # a short call's sync probe this much slower than the run's best: timed in that state


# The short names of the flags (a flag's text up to its first colon): what a filter may name.
FLAG_NAMES = ("few calls", "noisy", "bimodal", "contended", "host busy", "slow machine", "above ceiling", "throttled",
              "page faults", "unreproduced", "fwd_bwd faster than its own fwd", "fwd slower than its own fwd_bwd", "drop")


def flag_name(flag: str) -> str:
    return flag.split(":")[0]


def worth_remeasuring(flags: list[str] | None) -> bool:
    """Whether measuring a row again could clear one of its flags (any flag but the ``LASTING`` ones)."""
    return any(flag_name(f) not in LASTING for f in flags or [])


def parse_flag_filter(text: str) -> list[str]:
    """Comma-separated flag names (``FLAG_NAMES``; empty: every flag), each checked."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in FLAG_NAMES:
            raise InputError(f"unknown flag {name!r}; flags: {', '.join(FLAG_NAMES)}; hint: --flagged 'host busy,noisy'")
    return names


def number(value) -> float | None:
    """A row's field as a float: None when it is missing, NA, NaN or not a number."""
    if value is None or value is pd.NA:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


_RUN_LEVEL = {"calibration_s": "time_s_median", "sync_s": "sync_s"}  # a row's column: its key in run.json's entries


def best_calibration(meta: dict, rows: list[dict], threads: int | None = None,
                     column: str = "calibration_s") -> float | None:
    """The run's best (fastest) calibration: run-level entries and every row's own. With ``threads``,
    only those timed with that many torch threads (a run-level entry that does not say counts): the
    kernel runs on all of them, so a 1-thread cell is not "slow" against a 2-thread calibration.
    ``column`` "sync_s": the best sync probe instead (harness.bench.host.sync_probe)."""
    entries = [c for c in meta.get("calibration") or [] if isinstance(c, dict)]
    if threads is not None:
        entries = [c for c in entries if number(c.get("threads")) in (None, threads)]
        rows = [r for r in rows if number(r.get("torch_threads")) in (None, threads)]
    values = [number(c.get(_RUN_LEVEL[column])) for c in entries] + [number(r.get(column)) for r in rows]
    values = [v for v in values if v and v > 0]
    return min(values) if values else None


def as_list(value) -> list | None:
    """A list column's value as a list (lists, tuples and arrays as read back); None when missing."""
    return list(value) if hasattr(value, "__len__") and not isinstance(value, (str, dict)) else None


def used_samples(row: dict, column: str = "time_samples_s") -> list[float]:
    """The raw samples a row's statistics are of: those ``time_used`` marks (harness.bench.timing picked
    them: clean and, where enough were, timed while the machine was fast); in rows without it, those its
    threads did not wait for a CPU during (``time_contended``), or all of them when every one did or none
    is marked. ``column``: another per-sample list of the row (``time_fault_samples``), the same samples picked."""
    samples = as_list(row.get(column))
    if samples is None:
        return []
    for mark, keep in (("time_used", True), ("time_contended", False)):
        marks = as_list(row.get(mark))
        if marks is not None and len(marks) == len(samples) and any(bool(m) == keep for m in marks):
            return [float(s) for s, m in zip(samples, marks) if s is not None and bool(m) == keep]
    return [float(s) for s in samples if s is not None]


def bimodal(samples: list[float]) -> bool:
    """Two clusters of samples separated by a gap of ``BIMODAL_GAP`` x the median, each holding at least
    ``BIMODAL_SHARE`` of them."""
    xs = sorted(s for s in samples if s is not None)
    if len(xs) < 5:
        return False
    med = statistics.median(xs)
    gaps = [(xs[i + 1] - xs[i], i + 1) for i in range(len(xs) - 1)]
    gap, split = max(gaps)
    share = min(split, len(xs) - split) / len(xs)
    return med > 0 and gap > BIMODAL_GAP * med and share >= BIMODAL_SHARE


def slow_sync(row: dict, best_sync: float | None) -> float | None:
    """How much slower than ``best_sync`` (the run's best) a short call's threads synchronized right
    after its timing (``sync_s``, probed on CPUs with several threads only), when more than
    ``SLOW_SYNC``; None otherwise. Short: a median under ``SHORT_BELOW_S``, mostly the
    threads' synchronization (a longer call is mostly arithmetic, which that state does not slow)."""
    sync, med = number(row.get("sync_s")), number(row.get("time_s_median"))
    if not (sync and best_sync and med and 0 < med < SHORT_BELOW_S):
        return None
    return sync / best_sync if sync > SLOW_SYNC * best_sync else None


def sync_to_wait_for(row: dict, best_sync: float | None) -> float | None:
    """``best_sync`` when ``row`` is a short call timed while its threads synchronized slowly (a wait
    before measuring it again should probe them too: harness.run.quiet), else None."""
    return best_sync if slow_sync(row, best_sync) is not None else None


def row_flags(row: dict, best_cal: float | None, best_sync: float | None = None) -> list[str] | None:
    """Flags from a row's own evidence; None when the row carries none (a run from before the evidence).
    ``best_cal``, ``best_sync``: the run's best calibration and sync probe on the row's torch threads."""
    if row.get("status") != "ok":
        return []
    if number(row.get("calibration_s")) is None and number(row.get("host_busy")) is None:
        return None
    flags = []
    samples = used_samples(row)
    calls = int(number(row.get("time_n_samples")) or 0) * int(number(row.get("time_number_per_sample")) or 1)
    if calls < MIN_CALLS:
        flags.append(f"few calls: {calls} timed, fewer than {MIN_CALLS}")
    med, iqr = number(row.get("time_s_median")), number(row.get("time_s_iqr"))
    if med and iqr is not None and iqr / med > NOISE:
        flags.append(f"noisy: IQR/median {iqr / med:.2f} > {NOISE:g}")
    if bimodal(samples):
        flags.append("bimodal: the samples form two clusters")
    contended = as_list(row.get("time_contended"))
    if contended and all(contended):
        flags.append(f"contended: all {len(contended)} samples waited for a CPU (another process ran on it)")
    busy = number(row.get("host_busy"))
    if busy is not None and busy > HOST_BUSY:
        flags.append(f"host busy: {busy:.2f} of the cores used by other processes > {HOST_BUSY:g}")
    cal = number(row.get("calibration_s"))
    if cal and best_cal and cal > SLOW_CALIBRATION * best_cal:
        flags.append(f"{SLOW_MACHINE}: calibration {cal / best_cal:.2f}x the run's best > {SLOW_CALIBRATION:g}")
    elif (ratio := slow_sync(row, best_sync)) is not None:
        flags.append(f"{SLOW_MACHINE}: its threads synchronized {ratio:.2f}x slower than the run's best "
                     f"> {SLOW_SYNC:g} (a short multi-threaded call)")
    frac = number(row.get("ceiling_fraction"))
    if frac is not None and frac > CEILING:
        flags.append(f"above ceiling: {frac:.2f} of the matmul ceiling > {CEILING:g}")
    if row.get("gpu_throttle"):
        flags.append(f"throttled: {row['gpu_throttle']}")
    faults = used_samples(row, "time_fault_samples")
    if faults and statistics.median(faults) > FAULT_PAGES:
        flags.append(f"page faults: {statistics.median(faults):.0f} per call > {FAULT_PAGES}: each call maps fresh "
                     "memory, so its time depends on what the process allocated before (hint: --allocator steady, "
                     "where glibc's malloc can be pinned; run.json's allocator says whether it was)")
    spread = reproduction(row.get("time_rounds_s"), row.get("time_s_median"))
    if spread is not None and spread > ROUNDS_AGREE:
        flags.append(f"unreproduced: the nearest other round is {spread:.2f}x the kept one > {ROUNDS_AGREE:g}")
    elif spread is None and str(row.get("remeasured_for") or "").startswith(ROUND_PREFIX):
        flags.append("unreproduced: measured in rounds, but only one of them succeeded")
    return flags


def reproduction(medians, kept: float | None = None) -> float | None:
    """How far the round kept (median ``kept``; the fastest when None) is from the nearest other round,
    as the larger over the smaller median (None unless two rounds or more have a positive median)."""
    values = sorted(v for v in (number(m) for m in medians) if v and v > 0) if isinstance(medians, list) else []
    if len(values) < 2:
        return None
    kept = number(kept)
    at = min(range(len(values)), key=lambda i: abs(values[i] - kept)) if kept and kept > 0 else 0
    others = values[:at] + values[at + 1:]
    return min(max(v, values[at]) / min(v, values[at]) for v in others)


def _series_key(row: dict) -> tuple:
    """What stays fixed along a line of time against N: the case without its length (q_len kept for
    decoding, where it is fixed while kv_len grows; the number of documents, not their lengths)."""
    square = row.get("q_len") in (None, row.get("seq_len"))
    docs = len(json.loads(row["doc_lens"])) if isinstance(row.get("doc_lens"), str) and row["doc_lens"] else None
    return (*(row.get(k) for k in ("variant", "pattern", "causal", "window", "sinks", "stride", "globals", "topk",
                                   "device", "dtype", "batch", "heads", "kv_heads", "head_dim", "params", "pass")),
            None if square else row.get("q_len"), docs)


def _cell_key(row: dict) -> tuple:
    """The case a row measured, without its pass: its fwd and fwd_bwd rows share it (missing and NA
    fields read as None, so rows read back from a table join as the rows written)."""
    return tuple(None if _missing(row.get(c)) else row.get(c) for c in CASE_COLUMNS if c != "pass")


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def cross_flags(rows: list[dict]) -> dict[int, list[str]]:
    """Flags that need two rows: a fwd_bwd faster than its own fwd (the fwd row of the same case
    fields); a time that falls by more than ``DROP`` from one sequence length to the next larger one
    (same variant, pattern, shape and pass)."""
    out: dict[int, list[str]] = {}
    ok = [(i, r) for i, r in enumerate(rows) if r.get("status") == "ok" and number(r.get("time_s_median"))]
    fwd = {_cell_key(r): (i, r) for i, r in ok if r.get("pass") == "fwd"}
    for i, r in ok:
        if r.get("pass") == "fwd_bwd":
            twin = fwd.get(_cell_key(r))
            if twin and number(r["time_s_median"]) < number(twin[1]["time_s_median"]):
                out.setdefault(i, []).append("fwd_bwd faster than its own fwd")
                out.setdefault(twin[0], []).append("fwd slower than its own fwd_bwd")
    series: dict[tuple, list[tuple[int, int, float]]] = {}
    for i, r in ok:
        if number(r.get("seq_len")) is not None:
            series.setdefault(_series_key(r), []).append((int(r["seq_len"]), i, number(r["time_s_median"])))
    for points in series.values():
        points.sort()
        for (n0, i0, t0), (n1, i1, t1) in zip(points, points[1:]):
            if n1 > n0 and t1 * DROP < t0:
                out.setdefault(i0, []).append(f"drop: {t0 / t1:.1f}x slower than at the next length N={n1}")
    return out


SUSPECT_FLAGS = ("fwd slower than its own fwd_bwd", "drop")  # the slow side of a cross-cell check


def cross_suspects(rows: list[dict]) -> dict[int, str]:
    """Rows a cross-cell check suspects of a slow measurement (a fwd slower than its own fwd_bwd; the
    shorter length of a drop), with the check's flag: the ones to measure again. Rows already
    re-measured for a check (``remeasured_for`` set, other than a plain round; an end-of-run re-check
    counts) are not suspected twice."""
    out = {}
    for i, flags in cross_flags(rows).items():
        slow = [f for f in flags if flag_name(f) in SUSPECT_FLAGS]
        again = rows[i].get("remeasured_for")
        rechecked = isinstance(again, str) and (not again.startswith(ROUND_PREFIX) or RECHECK in again)
        if slow and not rechecked:  # a plain round is no re-check
            out[i] = slow[0]
    return out


def assess(rows: list[dict], meta: dict) -> list[dict]:
    """The rows with ``time_trusted`` (True, False, or None: not assessed) and ``time_flags`` (JSON text)."""
    counts = {number(r.get("torch_threads")) for r in rows}
    best = {t: (best_calibration(meta, rows, t), best_calibration(meta, rows, t, "sync_s")) for t in counts}
    cross = cross_flags(rows)
    out = []
    for i, row in enumerate(rows):
        own = row_flags(row, *best[number(row.get("torch_threads"))])
        flags = None if own is None else own + cross.get(i, [])
        trusted = None if flags is None or row.get("status") != "ok" else not flags
        out.append({**row, "time_trusted": trusted, "time_flags": json.dumps(flags) if flags else ""})
    return out


def sync_summary(ok: list[dict]) -> dict:
    """Of the ok rows that carry a sync probe: how many, how many read over ``SLOW_SYNC`` x the best
    among the rows on their torch threads, and how many of those are short calls (``slow_sync``: the
    ones a flag names); {} when none carries it."""
    probed = [r for r in ok if number(r.get("sync_s"))]
    best = {t: best_calibration({}, probed, t, "sync_s") for t in {number(r.get("torch_threads")) for r in probed}}
    slow = [r for r in probed if number(r["sync_s"]) > SLOW_SYNC * best[number(r.get("torch_threads"))]]
    flagged = sum(slow_sync(r, best[number(r.get("torch_threads"))]) is not None for r in slow)
    return {"cells": len(probed), "slow": len(slow), "flagged": flagged} if probed else {}


def summary(rows: list[dict]) -> dict:
    """Run-level trust: cells trusted, flagged, not assessed, and flags counted by reason."""
    ok = [r for r in rows if r.get("status") == "ok"]
    reasons: dict[str, int] = {}
    for r in ok:
        for flag in json.loads(r.get("time_flags") or "[]"):
            key = flag_name(flag)
            reasons[key] = reasons.get(key, 0) + 1
    out = {"measured": len(ok), "trusted": sum(r.get("time_trusted") is True for r in ok),
           "flagged": sum(r.get("time_trusted") is False for r in ok),
           "not_assessed": sum(r.get("time_trusted") is None for r in ok), "flags": reasons}
    marked = [(as_list(r.get("time_contended")) or []) for r in ok]
    if any(marked):  # samples that waited for a CPU, left out of their cell's statistics
        out["contention"] = {"samples": sum(len(m) for m in marked), "contended": sum(sum(map(bool, m)) for m in marked),
                             "cells": sum(any(m) for m in marked), "all_contended": sum(bool(m) and all(m) for m in marked)}
    slow = [(as_list(r.get("time_slow")) or [], as_list(r.get("time_used")) or []) for r in ok]
    if any(m for m, _ in slow):  # samples timed while the machine was slow, and those of them left out
        out["slow"] = {"samples": sum(len(m) for m, _ in slow), "slow": sum(sum(map(bool, m)) for m, _ in slow),
                       "left_out": sum(sum(bool(s) and not u for s, u in zip(m, used)) for m, used in slow),
                       "cells": sum(any(m) for m, _ in slow)}
    sync = sync_summary(ok)
    if sync:  # the threads' sync probe (CPU, several threads): how much of the run met the state it reads
        out["sync"] = sync
    rounds = [r for r in ok if reproduction(r.get("time_rounds_s")) is not None]
    if rounds:  # measured in rounds (--rounds): how well the run agrees with itself over time
        agree = sum(reproduction(r["time_rounds_s"], r.get("time_s_median")) <= ROUNDS_AGREE for r in rounds)
        out["rounds"] = {"cells": len(rounds), "agree": agree,
                         "spread_median": statistics.median(max(r["time_rounds_s"]) / min(r["time_rounds_s"])
                                                            for r in rounds)}
    return out
