"""Rounds: a cell measured several times over a run, the fastest round kept (``--rounds``).

A machine's speed drifts over minutes, more than the calibration matmul timed beside a cell shows: a
cell timed once, for a fraction of a second, reports whichever state the machine was in. With
``rounds`` > 1, the sweep measures every cell again after all cells have been measured once, round
after round (asv's ``rounds``, pyperf's several processes). Load and drift only ever add time, so the
row keeps its fastest round's whole measurement (samples, spread, rates and the evidence beside it:
calibration and host load), as a cross-cell re-measure keeps the faster of two
(timeit's and BenchmarkTools' minimum, applied to rounds rather than samples). One exception: when
the fastest round's own evidence flags it (noisy, timed while the host was busy, ...), a round with
clean evidence is kept instead if its median is within ``ROUNDS_AGREE`` of the fastest, so the two
rounds agree and the row keeps the one whose evidence can be trusted. ``time_rounds_s`` keeps every
round's median, so the trust flags can ask whether the kept round was reproduced
(harness.analysis.trust: "unreproduced"), and a lone lucky round is not trusted. A round whose output
was ``wrong`` is kept whatever its time: the cell is wrong, never ok by a luckier round.

Multi-threaded CPU calls under ``ROUND_BELOW_S`` (``measured_in_rounds``) are measured in more
rounds even when the run asks for one (``rounds_for``: ``--short-rounds``, default 3, for calls under
``SHORT_BELOW_S``; at most ``LONGER_ROUNDS`` for the longer ones). On a VM, the cores can pass data to
each other about 1.3x slower for seconds to minutes at a time; a multi-threaded call of a few
milliseconds, most of whose time is its threads' synchronization, then reads 1.3-1.7x slower while the
calibration matmul timed beside it stays within 10% (docs/measurements.md); and a call of tens of
milliseconds can read 1.3x slower for a second with every piece of evidence beside it clean. The
later rounds come after the whole first pass (on the main job, minutes apart), so a cell timed once in
such a state most likely reads its usual speed in another round (kept) or is flagged unreproduced.
A state that lasts across its rounds is the sync probe's to see (``sync_s``, for calls under
``SHORT_BELOW_S``; harness.analysis.trust: "slow machine"), but not always: on the trust proofs a
call of a few milliseconds read 1.3x slow in both of two rounds with its sync probe at its best,
hence a third round for those calls. The rounds share the cell's budget (``round_share``): they add
no timing where a round's share still holds ``MIN_CALLS`` calls (on the main job's 0.75 s, every call
measured in rounds), only each measurement's overhead.

Pure functions of rows.
"""

from __future__ import annotations

import json

from harness.analysis.trust import ROUNDS_AGREE, SHORT_BELOW_S, as_list, flag_name, number, row_flags

ROUND_BELOW_S = 50e-3  # a multi-threaded CPU call read under this is measured in rounds (``rounds_for``)
LONGER_ROUNDS = 2  # rounds at most for such a call of ``SHORT_BELOW_S`` or more

# Fields that belong to the row written, not to the measurement (make_row sets them again).
_ROW_FIELDS = ("run_id", "case_id", "isolated", "wall_s", "finished_at", "remeasured_for")


def rounds_done(row: dict) -> int:
    """Rounds of measurement that a row holds (1 for a row measured once); ``time_rounds_s`` as written
    (a list) or read back from a table (an array)."""
    medians = as_list(row.get("time_rounds_s"))
    return len(medians) if medians else 1


def _round_reading(row: dict) -> float | None:
    """The fastest reading so far (fastest round, or median) of a row whose rounds follow ``rounds_for``:
    a multi-threaded CPU call not measured by a Ray task (``node_id``: a local resume would time it
    again on another machine); None for any other row, or one without a positive reading."""
    if row.get("device") != "cpu" or isinstance(row.get("node_id"), str) or number(row.get("torch_threads")) == 1:
        return None
    readings = [number(m) for m in as_list(row.get("time_rounds_s")) or [row.get("time_s_median")]]
    readings = [m for m in readings if m and m > 0]
    return min(readings) if readings else None


def measured_in_rounds(row: dict) -> bool:
    """Whether a row's cell is one ``--short-rounds`` may measure in more rounds: a multi-threaded CPU
    call (``_round_reading``) whose fastest reading so far is under ``ROUND_BELOW_S``."""
    reading = _round_reading(row)
    return reading is not None and reading < ROUND_BELOW_S


def rounds_for(call_s: float, rounds: int, short_rounds: int) -> int:
    """Rounds for a multi-threaded CPU call that reads ``call_s`` seconds: ``short_rounds`` under
    ``SHORT_BELOW_S`` (the calls a slow spell can hold through two rounds), at most ``LONGER_ROUNDS``
    of them under ``ROUND_BELOW_S``, and never fewer than ``rounds``."""
    if call_s < SHORT_BELOW_S:
        return max(rounds, short_rounds)
    if call_s < ROUND_BELOW_S:
        return max(rounds, min(short_rounds, LONGER_ROUNDS))
    return rounds


def rounds_wanted(row: dict, rounds: int, short_rounds: int) -> int:
    """Rounds an ok row's cell is to be measured in: ``rounds_for`` its fastest reading when it is a
    multi-threaded CPU call (``_round_reading``), else ``rounds``."""
    reading = _round_reading(row)
    return rounds if reading is None else rounds_for(reading, rounds, short_rounds)


def round_share(rounds: int, wanted: int) -> float:
    """The share of ``budget_s`` each round of a cell measured in ``wanted`` rounds is timed for: its
    rounds share the budget of a cell measured in ``rounds``, so it gets the timing of any other cell,
    spread over more moments (1 when ``wanted`` adds none)."""
    return rounds / max(rounds, wanted)


def _wrong_again(new: dict) -> dict:
    """A later measurement whose output was wrong: it stands, whatever its time (a wrong output once is
    a wrong kernel), its reason saying that an earlier measurement passed."""
    reason = f"{new.get('reason') or 'wrong output'} (on a re-measurement; an earlier measurement passed)"
    return {**{k: v for k, v in new.items() if k not in _ROW_FIELDS}, "reason": reason}


def keep_faster(old: dict, new: dict) -> dict:
    """Of two measurements of a cell, the one to keep (load and drift only add time): ``new`` when it
    is ok and faster, or ``wrong`` (whatever its time), else ``old``; either without the fields of
    the row it was written in."""
    if new.get("status") == "wrong" and old.get("status") == "ok":
        return _wrong_again(new)
    faster = new.get("status") == "ok" and new.get("time_samples_s") and new["time_s_median"] < old["time_s_median"]
    return {k: v for k, v in (new if faster else old).items() if k not in _ROW_FIELDS}


def own_flags(measurement: dict, best_cal: float | None, best_sync: float | None = None) -> list[str]:
    """Flags a single measurement's own evidence raises (harness.analysis.trust.row_flags, without
    the rounds it may belong to); a measurement without evidence (a row from before it) is not clean."""
    single = {k: v for k, v in measurement.items() if k not in ("time_rounds_s", "remeasured_for")}
    flags = row_flags(single, best_cal, best_sync)
    return ["no evidence"] if flags is None else flags


def merge_round(old: dict, new: dict, best_cal: float | None = None, best_sync: float | None = None) -> dict:
    """The metrics of ``old`` (an ok row) with the measurement ``new`` as one more round.

    The faster round's measurement is kept whole (``keep_faster``: its median, samples, rates,
    calibration and host load belong together), by its median, unless its own evidence is flagged
    (``own_flags`` against ``best_cal`` and ``best_sync``, the run's best calibration and sync probe)
    and the other one's is clean and within ``ROUNDS_AGREE`` of the fastest round seen: then the clean
    one is kept. A slower clean round never stands in for a flagged one it does not agree with.
    ``time_rounds_s`` gains the new round's median, ``time_rounds_flags`` (JSON text) the names of its
    own flags (each round judged against the run's bests when it is merged, so a user sees why a slower
    round was kept), and attempts add up. A failed round (not ok) leaves the measurement as it was, its
    attempts counted (a row in rounds left with one median is flagged), except a ``wrong`` one: the row
    becomes wrong, whatever its time."""
    attempts = int(old.get("attempts") or 1) + int(new.get("attempts") or 1)
    if new.get("status") == "wrong":
        return {**_wrong_again(new), "attempts": attempts}
    if not (new.get("status") == "ok" and new.get("time_samples_s")):
        return {**keep_faster(old, new), "attempts": attempts}
    medians = list(old.get("time_rounds_s") or [old["time_s_median"]]) + [new["time_s_median"]]
    old_flags, new_flags = own_flags(old, best_cal, best_sync), own_flags(new, best_cal, best_sync)
    fastest = min(m for m in medians if m is not None)
    faster, faster_flags = (new, new_flags) if new["time_s_median"] < old["time_s_median"] else (old, old_flags)
    clean = [m for m, flags in ((old, old_flags), (new, new_flags))
             if m["time_s_median"] <= ROUNDS_AGREE * fastest and not flags]
    kept = min(clean, key=lambda m: m["time_s_median"]) if clean and faster_flags else faster
    judged = _rounds_flags(old, old_flags) + [_names(new_flags)]
    return {**{k: v for k, v in kept.items() if k not in _ROW_FIELDS}, "attempts": attempts, "time_rounds_s": medians,
            "time_rounds_flags": json.dumps(judged)}


def _names(flags: list[str]) -> list[str]:
    """Flag names (the text before each one's ":"), sorted, once each."""
    return sorted({flag_name(f) for f in flags})


def _rounds_flags(row: dict, own: list[str]) -> list[list[str] | None]:
    """Each round's own flag names so far (``time_rounds_flags``); for a row measured once, those of
    ``own`` (its own flags); for rounds merged before the column existed, None each."""
    text = row.get("time_rounds_flags")
    if isinstance(text, str) and text:
        return json.loads(text)
    return [_names(own)] if rounds_done(row) == 1 else [None] * rounds_done(row)
