"""The power of `attnbench ci` on this machine: how often it catches injected slowdowns of 1.1x, 1.2x,
1.3x and 1.5x and a 1.3x increase of peak memory, and how often it fails unchanged code.

It checks the commit under test (default HEAD) out twice with `git worktree add`:

* ``same``: the commit as it is;
* ``slow``: the commit with a few lines appended to four variant modules, each wrapping its class's
  ``forward``: after the real call, the wrapper spins until the measuring thread's CPU time since the
  call began is FACTOR times what the call took (naive 1.1x, local 1.2x, chunked 1.3x, sdpa_flash
  1.5x: a real slower copy of the code, no hook in the library, and exact whatever the load, since
  the gate's clock is the thread's CPU time). naive also holds an extra buffer of 0.3x its own peak
  memory during each call (the peaks measured here first, per case, with the gate's method).

The gate then runs ``--slow-runs`` times against ``slow`` and ``--same-runs`` times against ``same``
(``attnbench ci <commit> --tree <worktree>``, the gate's defaults), interleaved so both see the same
machine, and prints per run and at the end: per slowdown, the cases flagged out of those measured
(detection rate) and the measured ratios; the memory increase flagged; on unchanged code, the runs
that failed and the cases flagged (false positives, time and memory); the table goes to
docs/regression-gate.md.

Target (judged at the end; exit 1 with a one-line reason when it is missed, 0 when it is met):
every slowed run fails the gate; the 1.5x slowdown is flagged in at least 90% of its case
measurements and the 1.3x memory increase in all of them; no run on unchanged code fails the gate.

    python scripts/gate_power.py                          # 10 slowed + 20 unchanged runs (about 35 min)
    python scripts/gate_power.py --slow-runs 2 --same-runs 2 --processes 3 --recheck-processes 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLOWDOWNS = {"naive": ("naive.py", "Naive", 1.1), "local": ("local.py", "Local", 1.2),
             "chunked": ("chunked.py", "Chunked", 1.3), "sdpa_flash": ("sdpa.py", "SDPAFlash", 1.5)}
MEMORY_VARIANT, MEMORY_FACTOR = "naive", 1.3

INJECT = '''

# ---- gate power (scripts/gate_power.py): an injected slowdown{memory_note} ----
import time as _gp_time  # noqa: E402

_gp_forward = {cls}.forward
_GP_EXTRA_BYTES = {extra!r}  # (pattern kind, N) -> bytes held during the call


def _gp_slow_forward(self, q, k, v, *args, **kwargs):
    pattern = kwargs.get("pattern", args[0] if args else None)
    extra = _GP_EXTRA_BYTES.get((getattr(pattern, "kind", None), q.shape[-2]), 0)
    held = torch.empty(extra, dtype=torch.uint8) if extra else None
    t0 = _gp_time.thread_time()
    out = _gp_forward(self, q, k, v, *args, **kwargs)
    end = t0 + {factor!r} * (_gp_time.thread_time() - t0)
    while _gp_time.thread_time() < end:
        pass
    del held
    return out


{cls}.forward = _gp_slow_forward
'''


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def base_peaks(variant_name: str) -> dict:
    """Peak bytes of one call of each regression case of ``variant_name``, measured as the gate does."""
    import torch

    from harness.bench.memory import peak_memory
    from harness.bench.prepare import prepare
    from harness.core.registry import get_variant
    from harness.run.config import expand
    from harness.run.validate import build_config, load_toml

    torch.set_num_threads(1)
    peaks = {}
    for case in expand(build_config(load_toml("regression", True))):
        if case.variant != variant_name:
            continue
        variant = get_variant(case.variant, **dict(case.params))
        if variant.not_supported_reasons(case):
            continue
        peaks[(case.pattern, case.seq_len)] = peak_memory(prepare(variant, case).fn, case.device)[0]
    return peaks


def make_slow_copy(tree: Path, peaks: dict) -> None:
    for name, (module, cls, factor) in SLOWDOWNS.items():
        extra = {key: int((MEMORY_FACTOR - 1) * b) for key, b in peaks.items()} if name == MEMORY_VARIANT else {}
        note = f" of {factor}x, and {MEMORY_FACTOR}x peak memory" if extra else f" of {factor}x"
        path = tree / "variants" / module
        path.write_text(path.read_text() + INJECT.format(cls=cls, factor=factor, extra=extra, memory_note=note))


def run_gate(commit: str, tree: Path, args, out_json: Path) -> dict:
    cmd = [sys.executable, "-m", "harness", "ci", commit, "--tree", str(tree), "--processes", str(args.processes),
           "--recheck-processes", str(args.recheck_processes), "--threshold", str(args.threshold),
           "--json", str(out_json), "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 1) or not out_json.exists():
        raise SystemExit(f"gate_power: the gate failed to run (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    data = json.loads(out_json.read_text())
    data["wall_s_outer"] = time.perf_counter() - t0
    return data


def variant_of(case_id: str) -> str:
    return case_id.split("/")[0]


def describe(kind: str, i: int, data: dict) -> str:
    cases = data["cases"]
    slower = [c["case_id"] for c in cases if c["verdict"] == "slower"]
    more = [c["case_id"] for c in cases if c["mem_verdict"] == "more"]
    ratios = ", ".join(f"{variant_of(c['case_id'])} {c['time_ratio']:.2f}" for c in cases if c["time_ratio"])
    return (f"{kind:4s} run {i + 1:2d}: exit {data['exit_code']}  {data['wall_s_outer']:4.0f} s  slower "
            f"{len(slower)}/{len(cases)}  more memory {len(more)}  rechecked {len(data['rechecked'])}\n"
            f"           ratios: {ratios}")


def summarize(results: dict, wall: float) -> str:
    out = ["", "| injected | case measurements flagged | measured ratio (median, range) |", "|---|---|---|"]
    for name, (_, _, factor) in sorted(SLOWDOWNS.items(), key=lambda kv: kv[1][2]):
        rows = [c for d in results["slow"] for c in d["cases"] if variant_of(c["case_id"]) == name]
        hits = sum(c["verdict"] == "slower" for c in rows)
        ratios = sorted(c["time_ratio"] for c in rows if c["time_ratio"])
        med = ratios[len(ratios) // 2] if ratios else float("nan")
        out.append(f"| {name} {factor}x time | {hits}/{len(rows)} ({hits / max(1, len(rows)):.0%}) | "
                   f"{med:.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f}) |" if ratios else f"| {name} {factor}x | 0/0 | - |")
    mem_rows = [c for d in results["slow"] for c in d["cases"] if variant_of(c["case_id"]) == MEMORY_VARIANT]
    mem_hits = sum(c["mem_verdict"] == "more" for c in mem_rows)
    mem_ratios = sorted(c["mem_ratio"] for c in mem_rows if c["mem_ratio"])
    out.append(f"| {MEMORY_VARIANT} {MEMORY_FACTOR}x peak memory | {mem_hits}/{len(mem_rows)} | "
               f"{mem_ratios[len(mem_ratios) // 2]:.3f} ({mem_ratios[0]:.3f}-{mem_ratios[-1]:.3f}) |")
    same = results["same"]
    same_rows = [c for d in same for c in d["cases"]]
    failed = sum(d["exit_code"] != 0 for d in same)
    slower = sum(c["verdict"] == "slower" for c in same_rows)
    first_round = sum(len(d["rechecked"]) for d in same)
    mem_fp = sum(c["mem_verdict"] == "more" for c in same_rows)
    err_fp = sum(c["error_verdict"] == "worse" for c in same_rows)
    ratios = sorted(c["time_ratio"] for c in same_rows if c["time_ratio"])
    out += ["", f"unchanged code: gate failed {failed}/{len(same)} runs; {slower}/{len(same_rows)} case measurements "
                f"slower ({first_round} flagged in a first round and re-measured); more memory {mem_fp}/"
                f"{len(same_rows)}; less accurate {err_fp}/{len(same_rows)}",
            f"unchanged code, normalized ratios: {ratios[0]:.2f}-{ratios[-1]:.2f}, 5th-95th percentile "
            f"{ratios[len(ratios) // 20]:.2f}-{ratios[-1 - len(ratios) // 20]:.2f}; highest CI lower bound "
            f"{max(c['time_ratio_lo'] for c in same_rows if c['time_ratio_lo'] is not None):.3f}"]
    walls = sorted(d["wall_s_outer"] for k in results for d in results[k])
    out.append(f"wall time {wall:.0f} s in all; one gate run {walls[0]:.0f}-{walls[-1]:.0f} s "
               f"(median {walls[len(walls) // 2]:.0f} s)")
    return "\n".join(out)


def judge(results: dict) -> str | None:
    """The target's miss as one line, or None when it is met (see the module docstring)."""
    slow, same = results["slow"], results["same"]
    passed = sum(d["exit_code"] == 0 for d in slow)
    if passed:
        return f"{passed}/{len(slow)} slowed runs passed the gate (target: every one fails)"
    name = max(SLOWDOWNS, key=lambda n: SLOWDOWNS[n][2])
    rows = [c for d in slow for c in d["cases"] if variant_of(c["case_id"]) == name]
    hits = sum(c["verdict"] == "slower" for c in rows)
    if not rows or hits < 0.9 * len(rows):
        return (f"the {SLOWDOWNS[name][2]}x slowdown ({name}) was flagged in {hits}/{len(rows)} case measurements "
                "(target: at least 90%)")
    mem = [c for d in slow for c in d["cases"] if variant_of(c["case_id"]) == MEMORY_VARIANT]
    mem_hits = sum(c["mem_verdict"] == "more" for c in mem)
    if not mem or mem_hits < len(mem):
        return (f"the {MEMORY_FACTOR}x memory increase ({MEMORY_VARIANT}) was flagged in {mem_hits}/{len(mem)} case "
                "measurements (target: all)")
    failed = sum(d["exit_code"] != 0 for d in same)
    if failed:
        return f"{failed}/{len(same)} runs on unchanged code failed the gate (target: none)"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", default="HEAD", help="commit to test (default: HEAD)")
    p.add_argument("--slow-runs", dest="slow_runs", type=int, default=10, help="gate runs on the slowed copy (10)")
    p.add_argument("--same-runs", dest="same_runs", type=int, default=20, help="gate runs on unchanged code (20)")
    p.add_argument("--processes", type=int, default=5, help="process pairs per gate run (default: 5)")
    p.add_argument("--recheck-processes", dest="recheck_processes", type=int, default=8,
                   help="fresh pairs for flagged cases (default: 8)")
    p.add_argument("--threshold", type=float, default=1.10)
    p.add_argument("--out", help="write every run's figures to this JSON file")
    args = p.parse_args(argv)

    commit = git("rev-parse", "--verify", f"{args.ref}^{{commit}}")
    peaks = base_peaks(MEMORY_VARIANT)
    tmp = Path(tempfile.mkdtemp(prefix="attnbench-power-"))
    trees = {"slow": tmp / "slow", "same": tmp / "same"}
    started = time.perf_counter()
    results: dict[str, list[dict]] = {"slow": [], "same": []}
    want = {"slow": args.slow_runs, "same": args.same_runs}
    try:
        for tree in trees.values():
            git("worktree", "add", "--detach", str(tree), commit)
        make_slow_copy(trees["slow"], peaks)
        print(f"gate power on {commit[:10]}: {args.slow_runs} runs slowed ("
              + ", ".join(f"{n} {f}x" for n, (_, _, f) in SLOWDOWNS.items())
              + f"; {MEMORY_VARIANT} {MEMORY_FACTOR}x memory), {args.same_runs} unchanged; {args.processes} pairs, "
              f"{args.recheck_processes} recheck pairs, threshold {args.threshold:g}", flush=True)
        i = 0
        while any(len(results[k]) < want[k] for k in want):
            for kind in (("slow", "same") if i % 2 == 0 else ("same", "slow")):
                if len(results[kind]) < want[kind]:
                    data = run_gate(commit, trees[kind], args, tmp / f"{kind}-{len(results[kind])}.json")
                    results[kind].append(data)
                    print(describe(kind, len(results[kind]) - 1, data), flush=True)
            i += 1
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)
    wall = time.perf_counter() - started
    print(summarize(results, wall))
    if args.out:
        Path(args.out).write_text(json.dumps({"commit": commit, "args": vars(args), "wall_s": wall,
                                              "results": results}, indent=2))
    miss = judge(results)
    if miss:
        print(f"gate_power: target missed: {miss}", file=sys.stderr)
        return 1
    print("gate_power: target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
