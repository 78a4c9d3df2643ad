"""Issue 9's target, measured: the same small sweep on a quiet machine, then while another process
loads every core in on/off bursts of about a second. In the loaded run, no cell whose median is off
by more than 25% from the quiet run may be left trusted, and at least 80% of cells should be trusted
and within 15% of quiet. Prints the distribution of loaded/quiet ratios for trusted and untrusted
cells and how much longer the loaded run took.

Run: python scripts/trust_proof.py [--out results/trust-proof] [--burst-s 1.0]
(about 10 minutes on 2 cores; run it on an otherwise quiet machine: your own jobs are load too)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

from harness.run.config import build_config
from harness.run.sweep import run_sweep
from harness.store.load import load_run

SWEEP = {"name": "trust-proof", "device": "cpu", "variants": ["naive", "chunked", "local", "sdpa_flash", "hierarchical"],
         "patterns": ["global", "local", "hierarchical"], "causal": [False], "seq_lens": [256, 512, 1024, 2048],
         "heads": [4], "batch": [1], "head_dims": [64], "dtypes": ["float32"], "passes": ["fwd", "fwd_bwd"],
         "window": 64, "budget_s": 0.2, "timeout_s": 300}


def _burn(stop, burst_s: float) -> None:
    """One core: busy for burst_s, idle for burst_s, until told to stop."""
    while not stop.is_set():
        end = time.perf_counter() + burst_s
        while time.perf_counter() < end:
            pass
        stop.wait(burst_s)


def _sweep(out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    df, meta = load_run(run_sweep(build_config(SWEEP), out=out, quiet=True))
    ok = df[df["status"] == "ok"]
    return time.perf_counter() - t0, {r["case_id"]: r for r in ok.to_dict("records")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/trust-proof")
    ap.add_argument("--burst-s", type=float, default=1.0)
    args = ap.parse_args()
    out = Path(args.out)
    quiet_s, quiet = _sweep(out / "quiet")
    stop = mp.Event()
    burners = [mp.Process(target=_burn, args=(stop, args.burst_s), daemon=True) for _ in range(os.cpu_count() or 1)]
    for p in burners:
        p.start()
    try:
        loaded_s, loaded = _sweep(out / "loaded")
    finally:
        stop.set()
        for p in burners:
            p.join(5)
    cells = sorted(set(quiet) & set(loaded))
    ratio = {c: loaded[c]["time_s_median"] / quiet[c]["time_s_median"] for c in cells}
    trusted = [c for c in cells if loaded[c]["time_trusted"] is True]
    untrusted = [c for c in cells if loaded[c]["time_trusted"] is not True]
    off_trusted = [c for c in trusted if abs(ratio[c] - 1) > 0.25]
    good = [c for c in trusted if abs(ratio[c] - 1) <= 0.15]
    quiet_trusted = sum(quiet[c]["time_trusted"] is True for c in cells)

    def dist(ids):
        if not ids:
            return "none"
        r = np.array([ratio[c] for c in ids])
        return (f"n={len(r)}, median {np.median(r):.2f}, 5-95% [{np.percentile(r, 5):.2f}, {np.percentile(r, 95):.2f}], "
                f"max {r.max():.2f}")

    print(f"quiet run: {quiet_s:.0f} s, {len(quiet)} ok cells, {quiet_trusted} trusted")
    print(f"loaded run: {loaded_s:.0f} s ({loaded_s / quiet_s:.1f}x the quiet run), {len(loaded)} ok cells")
    print(f"loaded/quiet, trusted cells:   {dist(trusted)}")
    print(f"loaded/quiet, untrusted cells: {dist(untrusted)}")
    print(f"trusted and off by more than 25%: {len(off_trusted)} (goal 0) {off_trusted[:5]}")
    print(f"trusted and within 15%: {len(good)} of {len(cells)} = {len(good) / max(len(cells), 1):.0%} (goal >= 80%)")
    return 0 if not off_trusted and len(good) >= 0.8 * len(cells) else 1


if __name__ == "__main__":
    raise SystemExit(main())
