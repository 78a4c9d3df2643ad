"""The machine figures a run keeps in run.json: the device's matmul ceiling per dtype and its copy
bandwidth (the best measured over the run: a busy machine only lowers them), and the calibration
kernel's time (and the sync probe's) at the start, on resume and at the end."""

from __future__ import annotations

import time

import torch

from harness.analysis.trust import CEILING, best_calibration
from harness.bench.host import sync_evidence
from harness.bench.machine import BANDWIDTH_KEY, copy_bytes_per_s, matmul_flops_per_s
from harness.bench.timing import calibrate as calibration_entry
from harness.core.case import DTYPES
from harness.core.errors import one_line
from harness.run.progress import say
from harness.run.quiet import QuietWaiter


def measure_ceilings(device: str, dtypes, quiet: bool) -> dict[str, float]:
    """The device's matmul FLOP/s per dtype, and its copy bandwidth under ``BANDWIDTH_KEY``."""
    say(quiet, f"measuring the {device} matmul ceiling for {', '.join(dtypes)} and its bandwidth ...")
    ceilings = {}
    try:
        ceilings[BANDWIDTH_KEY] = copy_bytes_per_s(device)
    except Exception as exc:  # e.g. no CUDA: the cases will say why; the run still happens
        say(quiet, f"  no bandwidth ceiling: {one_line(exc)}")
    for dt in dtypes:
        try:
            ceilings[dt] = matmul_flops_per_s(device, DTYPES[dt])
        except Exception as exc:  # e.g. no CUDA: the cases will say why; the run still happens
            say(quiet, f"  no ceiling for {dt}: {one_line(exc)}")
    return ceilings


def calibrate(device: str, when: str) -> dict:
    """One calibration entry for run.json (on a CPU with several threads, with the sync probe:
    harness.bench.host.sync_evidence); a failure is recorded, not raised."""
    try:
        return {"when": when, **calibration_entry(device), **sync_evidence(device)}
    except Exception as exc:
        return {"when": when, "error": one_line(exc)}


def keep_best_ceilings(meta: dict, measured: dict, when: str) -> None:
    """Record a measurement of the ceilings and keep the best of all (a busy machine only lowers them).
    The dict is updated in place: the runner measuring the re-checks holds it."""
    meta.setdefault("ceilings_measured", []).append({"when": when, "at": time.time(), **measured})
    if not isinstance(meta.get("ceilings_flops_per_s"), dict):
        meta["ceilings_flops_per_s"] = {}
    best = meta["ceilings_flops_per_s"]
    for key, value in measured.items():
        if value and value > (best.get(key) or 0):
            best[key] = value


def against(row: dict, ceilings: dict) -> dict:
    """A row's ceiling fractions recomputed against the run's best ceilings (start, resume, end)."""
    out = dict(row)
    flops = ceilings.get(row.get("dtype"))
    if flops and row.get("flops_per_s"):
        out.update(ceiling_flops_per_s=flops, ceiling_fraction=row["flops_per_s"] / flops)
    bandwidth = ceilings.get(BANDWIDTH_KEY)
    if bandwidth and row.get("bytes_per_s"):
        out.update(bandwidth_bytes_per_s=bandwidth, bandwidth_fraction=row["bytes_per_s"] / bandwidth)
    return out


def above_ceiling(rows: list[dict], ceilings: dict) -> int:
    return sum(1 for r in rows if r.get("status") == "ok"
               and (against(r, ceilings).get("ceiling_fraction") or 0) > CEILING)


def measure_end(meta: dict, rows: list[dict], device: str, dtypes, retries: int, quiet: bool) -> None:
    """The end's calibration and ceilings. A ceiling measured while the machine was busy reads low, and
    every cell timed in a quiet moment then reads "above ceiling": while cells are above the best
    ceiling, it is measured again (up to ``retries`` times: ``--ceiling-retries``), each time after
    waiting for the calibration kernel to come back near the run's best."""
    meta["calibration"].append(calibrate(device, "end"))
    keep_best_ceilings(meta, measure_ceilings(device, dtypes, quiet), "end")
    wait = QuietWaiter()
    for _ in range(retries):
        above = above_ceiling(rows, meta["ceilings_flops_per_s"])
        if not above:
            break
        say(quiet, f"{above} cell(s) above the matmul ceiling: measuring it again once the machine is quiet")
        wait(device, best_calibration(meta, rows, torch.get_num_threads()))
        keep_best_ceilings(meta, measure_ceilings(device, dtypes, quiet), f"end, again: {above} cell(s) above it")
