"""How far `time_trusted` can be believed: the same small sweep (72 cells, CPU) on a quiet machine,
then while another process loads every core in on/off bursts of about a second, then quiet again.

Target (exit 1 with a one-line reason when missed, 0 when met): the loaded run takes at most 2.5x the
quiet run's wall time (with two quiet runs, the faster one's); no cell it trusts is off by more than
25% from its reference; and at least 80% of the cells the quiet run measured are trusted in the
loaded run and within 15% of their reference. A cell's reference is the mean of its quiet medians that
their own run trusted: a value the quiet run itself flagged (a slow machine, noise, unreproduced
rounds) is not the quiet machine's answer, so a cell with none has no reference and counts against the
80%. The same figures against the mean of every quiet median, trusted or not, and over the cells whose
two quiet runs agree within 15% are printed beside them, not judged. It prints the distribution of
loaded/quiet ratios for trusted and untrusted cells, how much longer the loaded run took, how often
each run met the host state that slows short multi-threaded calls (its sync probe), how long each
run's re-check waited for quiet, and the raw and calibration-normalized drift between the runs
(where normalizing pulls the median back to 1, the machine as a whole drifted; what is left is drift
specific to the cells).

With ``--rounds N`` each sweep measures every cell N times over its run (see docs/trust.md).

Run: python scripts/trust_proof.py [--out results/trust-proof] [--burst-s 1.0] [--threads N] [--rounds N]
[--short-rounds N]
(``--judge`` runs nothing and judges the runs already under ``--out``.) It takes 25-40 minutes on a
2-core machine with --rounds 4; run it on an otherwise quiet machine: your own jobs are load too.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness.analysis.trust import SLOW_SYNC, number, sync_summary
from harness.store.load import load_run

# The small sweep, as `attnbench sweep` flags; each run is a fresh process, as a user runs it
# (runs made in one process would share its allocator's and threads' history; a user's runs do not).
SWEEP = ["--variants", "naive,chunked,local,sdpa_flash,hierarchical", "--patterns", "global,local,hierarchical",
         "--causal", "no", "--seq-lens", "256,512,1024,2048", "--heads", "4", "--batch", "1", "--head-dims", "64",
         "--dtypes", "float32", "--passes", "fwd,fwd_bwd", "--window", "64", "--budget-s", "0.2",
         "--timeout-s", "300", "--device", "cpu"]


WALL_RATIO = 2.5  # the loaded run's wall time at most this many times the quiet run's
OFF, WITHIN, SHARE = 0.25, 0.15, 0.8  # no trusted cell off by more than OFF; SHARE of them trusted and within WITHIN


def _burn(stop, burst_s: float) -> None:
    """One core: busy for burst_s, idle for burst_s, until told to stop."""
    while not stop.is_set():
        end = time.perf_counter() + burst_s
        while time.perf_counter() < end:
            pass
        stop.wait(burst_s)


def _sweep(out: Path, args) -> tuple[float, dict]:
    """One sweep in a fresh process, with the proof's --threads, --rounds, --short-rounds and --trust-budget."""
    given = {"--threads": args.threads, "--short-rounds": args.short_rounds, "--trust-budget": args.trust_budget}
    cmd = [sys.executable, "-m", "harness", "sweep", *SWEEP, *(x for k, v in given.items() if v for x in (k, str(v))),
           "--rounds", str(args.rounds), "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0, _cells(out)


def _cells(out: Path) -> dict:
    df, _ = load_run(out)
    ok = df[df["status"] == "ok"]
    return {r["case_id"]: r for r in ok.to_dict("records")}


def _took_s(out: Path) -> float:
    """A finished run's own wall time (run.json), for --judge."""
    meta = json.loads((out / "run.json").read_text())
    if not meta.get("finished_at"):
        raise SystemExit(f"{out} did not finish (run.json has no finished_at); hint: attnbench sweep --resume {out}")
    return meta["finished_at"] - meta["started_at"]  # a resumed run: including the time it was stopped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/trust-proof")
    ap.add_argument("--burst-s", type=float, default=1.0)
    ap.add_argument("--threads", type=int, help="torch threads for every cell (default: the sweep's, all cores)")
    ap.add_argument("--rounds", type=int, default=1, help="the sweep's --rounds: every cell measured this many "
                                                         "times over the run, the fastest round kept (default 1)")
    ap.add_argument("--quiet-runs", dest="quiet_runs", type=int, choices=[1, 2], default=2,
                    help="quiet runs: 1 before the loaded run, or 2 (before and after it; default)")
    ap.add_argument("--short-rounds", dest="short_rounds", type=int,
                    help="the sweeps' --short-rounds (default: the sweep's own)")
    ap.add_argument("--trust-budget", dest="trust_budget", help="the sweeps' --trust-budget (default: the sweep's own)")
    ap.add_argument("--judge", action="store_true", help="run nothing: judge the runs already under --out (quiet, "
                                                         "loaded, and quiet-after with --quiet-runs 2)")
    args = ap.parse_args()
    out = Path(args.out)
    if args.judge:
        two = args.quiet_runs == 2
        walls = [_took_s(out / "quiet"), *([_took_s(out / "quiet-after")] if two else [])]
        return judge_runs(out, args, walls, _cells(out / "quiet"), _took_s(out / "loaded"), _cells(out / "loaded"),
                          _cells(out / "quiet-after") if two else None)
    for sub in ("quiet", "loaded", "quiet-after"):
        shutil.rmtree(out / sub, ignore_errors=True)
    quiet_s, quiet = _sweep(out / "quiet", args)
    stop = mp.Event()
    burners = [mp.Process(target=_burn, args=(stop, args.burst_s), daemon=True) for _ in range(os.cpu_count() or 1)]
    for p in burners:
        p.start()
    try:
        loaded_s, loaded = _sweep(out / "loaded", args)
    finally:
        stop.set()
        for p in burners:
            p.join(5)
    walls, quiet2 = [quiet_s], None
    if args.quiet_runs == 2:
        quiet2_s, quiet2 = _sweep(out / "quiet-after", args)
        walls.append(quiet2_s)
    return judge_runs(out, args, walls, quiet, loaded_s, loaded, quiet2)


def judge_runs(out: Path, args, quiet_walls: list[float], quiet: dict, loaded_s: float, loaded: dict,
               quiet2: dict | None) -> int:
    """The target's figures for the runs under ``out`` (each run: its ok cells by id); 0 when the
    target is met. The loaded run's wall time is judged against the faster quiet run's (a quiet run the
    host slowed would make the ratio look better than it is); its cells against the quiet medians their
    own run trusted, over every cell the first quiet run measured (a cell missing from the loaded run
    is not trusted there)."""
    quiet_s = min(quiet_walls)
    quiets = [quiet] + ([quiet2] if quiet2 is not None else [])
    cells = sorted(quiet)
    trusted_ref, every_ref = {}, {}
    for c in cells:
        values = [q[c]["time_s_median"] for q in quiets if c in q]
        sure = [q[c]["time_s_median"] for q in quiets if c in q and q[c].get("time_trusted") is True]
        every_ref[c] = sum(values) / len(values)
        if sure:
            trusted_ref[c] = sum(sure) / len(sure)
    both = [c for c in cells if all(c in q for q in quiets)]
    drift = {c: quiets[-1][c]["time_s_median"] / quiet[c]["time_s_median"] for c in both}
    stable = [c for c in both if abs(drift[c] - 1) <= WITHIN]

    def dist(values):
        if not values:
            return "none"
        r = np.array(values)
        return (f"n={len(r)}, median {np.median(r):.2f}, 5-95% [{np.percentile(r, 5):.2f}, {np.percentile(r, 95):.2f}], "
                f"min {r.min():.2f}, max {r.max():.2f}")

    def judge(ids, ref, label) -> list[str]:
        """The figures over ``ids``; the target's misses (a cell without a reference counts as not within)."""
        ratio = {c: loaded[c]["time_s_median"] / ref[c] for c in ids if c in ref and c in loaded}
        trusted = [c for c in ratio if loaded[c].get("time_trusted") is True]
        untrusted = [c for c in ratio if loaded[c].get("time_trusted") is not True]
        off = [c for c in trusted if abs(ratio[c] - 1) > OFF]
        good = [c for c in trusted if abs(ratio[c] - 1) <= WITHIN]
        print(f"{label}: {len(ids)} cells, {sum(c in ref for c in ids)} with a reference, "
              f"{sum(c in loaded for c in ids)} measured in the loaded run")
        print(f"  loaded/quiet, trusted cells:   {dist([ratio[c] for c in trusted])}")
        print(f"  loaded/quiet, untrusted cells: {dist([ratio[c] for c in untrusted])}")
        print(f"  trusted and off by more than {OFF:.0%}: {len(off)} (goal 0) "
              + ", ".join(f"{c} {ratio[c]:.2f}" for c in off[:6]))
        print(f"  trusted and within {WITHIN:.0%}: {len(good)} of {len(ids)} = {len(good) / max(len(ids), 1):.0%} "
              f"(goal >= {SHARE:.0%})")
        misses = [f"{len(off)} trusted cells off by more than {OFF:.0%} ({label}; target: none)"] if off else []
        if not ids or len(good) < SHARE * len(ids):
            misses.append(f"{len(good)} of {len(ids)} cells trusted and within {WITHIN:.0%} ({label}; "
                          f"target: at least {SHARE:.0%})")
        return misses

    print(f"threads: {args.threads or 'the default (all cores)'}; rounds: {args.rounds}; short rounds: "
          f"{args.short_rounds or 'the sweep default'}; quiet runs: {args.quiet_runs}")
    print(f"quiet run: {' and '.join(f'{w:.0f} s' for w in quiet_walls)}"
          f"{' (the faster is the reference)' if len(quiet_walls) > 1 else ''}, {len(quiet)} ok cells, "
          + " and ".join(str(sum(q[c].get("time_trusted") is True for c in q)) for q in quiets) + " trusted")
    print(f"loaded run: {loaded_s:.0f} s ({loaded_s / quiet_s:.1f}x the quiet run), {len(loaded)} ok cells, "
          f"{sum(r.get('time_trusted') is True for r in loaded.values())} trusted")
    for sub, run in (("quiet", quiet), ("loaded", loaded), ("quiet-after", quiet2)):
        state = sync_state(run or {})
        if state:
            print(f"{sub} run: {state}")
    for sub in ("quiet", "loaded", "quiet-after"):  # the end-of-run re-check's waits for the machine to come back
        meta = json.loads((out / sub / "run.json").read_text()) if (out / sub / "run.json").exists() else {}
        waited = (meta.get("trust") or {}).get("recheck_wait") or meta.get("recheck_wait")  # the latter: runs written before it moved into trust
        if waited:
            print(f"{sub} run: the re-check waited {waited['waited_s']:.0f} s for quiet (budget {waited['budget_s']:.0f} s)")
    if args.quiet_runs == 2:
        print(f"quiet after / quiet before: {dist(list(drift.values()))}; {len(stable)} of {len(both)} cells "
              f"within {WITHIN:.0%}")
    misses = judge(cells, trusted_ref, "every cell, against the quiet values their run trusted")
    judge(cells, every_ref, "every cell, against the mean of its quiet values, trusted or not (not judged)")
    if args.quiet_runs == 2:
        judge(stable, every_ref, f"cells whose two quiet runs agree within {WITHIN:.0%} (not judged)")
    print("\n".join(drift_lines(out)))
    if loaded_s > WALL_RATIO * quiet_s:
        misses.append(f"the loaded run took {loaded_s / quiet_s:.1f}x the quiet run's wall time (target: at most "
                      f"{WALL_RATIO:g}x)")
    if misses:
        print(f"trust_proof: target missed: {'; '.join(misses)}", file=sys.stderr)
        return 1
    print("trust_proof: target met")
    return 0


def sync_state(cells: dict) -> str:
    """How often a run's short multi-threaded calls met the host state that slows them (its cells'
    sync probe, ``sync_s``, against the run's best: docs/trust.md); '' for a run without the probe.
    A quiet run that met it much is no quiet machine's answer."""
    state = sync_summary(list(cells.values()))
    if not state:
        return ""
    values = [number(r.get("sync_s")) for r in cells.values() if number(r.get("sync_s"))]
    return (f"its threads' sync probe read {np.median(values) / min(values):.2f}x its best at the median, over "
            f"{SLOW_SYNC:g}x in {state['slow']} of {state['cells']} cells (the state that slows short "
            "multi-threaded calls)")


def _ratio_text(ratio) -> str:
    ratio = ratio.dropna().astype(float)
    within = int(((ratio - 1).abs() <= WITHIN).sum())
    return (f"median {ratio.median():.2f}, within {WITHIN:.0%}: {within}/{len(ratio)}, "
            f"5-95% [{ratio.quantile(0.05):.2f}, {ratio.quantile(0.95):.2f}]")


def drift_lines(folder: Path) -> list[str]:
    """Per pair of runs (quiet after / quiet, loaded / quiet): the cells' ratios, raw and divided by the
    ratio of the calibration kernel timed beside each cell (as `attnbench compare` normalizes)."""
    runs = {}
    for name in ("quiet", "loaded", "quiet-after"):
        if (folder / name).is_dir():
            df, _ = load_run(folder / name)
            runs[name] = df[df["status"] == "ok"].set_index("case_id")
    if "quiet" not in runs:
        return []
    base, lines = runs["quiet"], []
    for name, label in (("quiet-after", "quiet after / quiet"), ("loaded", "loaded / quiet")):
        if name in runs:
            run = runs[name]
            cells = run.index.intersection(base.index)
            raw = run.loc[cells, "time_s_median"] / base.loc[cells, "time_s_median"]
            norm = raw * base.loc[cells, "calibration_s"] / run.loc[cells, "calibration_s"]
            lines.append(f"{label}: raw {_ratio_text(raw)} | normalized {_ratio_text(norm)}")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
