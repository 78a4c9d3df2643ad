"""Proof that `attnbench ci` catches a real 1.5x slowdown and stays quiet on unchanged code.

It checks out the commit under test (default HEAD) twice with `git worktree add`:

* ``same``: the commit as it is;
* ``slow``: the commit with ``variants/naive.py`` changed so that ``Naive.forward`` also runs its own
  forward pass on half of the heads and throws the result away: 1.5x the arithmetic, a real slower
  copy of the code (no test hook in the library).

Then it runs the gate RUNS times against each (``attnbench ci <commit> --tree <worktree>``),
alternating slow / same so both see the same machine load, and prints, per run, the exit status, the
cases flagged, the ratios, and at the end the figures: runs flagged, per-case detection, largest
ratios seen on unchanged code, wall time. Exit 0 when every slowed run failed the gate and no
unchanged run did.

    python scripts/gate_proof.py                 # 10 + 10 runs, the gate's defaults
    python scripts/gate_proof.py --runs 3 --processes 4 --recheck-processes 4
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
SLOW_VARIANT = "naive"
FORWARD = "    def forward(self, q, k, v, pattern: Pattern) -> torch.Tensor:\n"
SLOW_FORWARD = '''    def forward(self, q, k, v, pattern: Pattern) -> torch.Tensor:
        # gate proof: the same forward pass again on half of the heads, result discarded (1.5x the work)
        h = max(1, q.shape[1] // 2)
        self._forward_once(q[:, :h], k[:, :h], v[:, :h], pattern)
        return self._forward_once(q, k, v, pattern)

    def _forward_once(self, q, k, v, pattern: Pattern) -> torch.Tensor:
'''


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_slow_copy(tree: Path) -> None:
    path = tree / "variants" / f"{SLOW_VARIANT}.py"
    text = path.read_text()
    if text.count(FORWARD) != 1:
        raise SystemExit(f"gate_proof: cannot find exactly one `{FORWARD.strip()}` in {path}; update SLOW_FORWARD")
    path.write_text(text.replace(FORWARD, SLOW_FORWARD))


def run_gate(commit: str, tree: Path, args, out_json: Path) -> dict:
    cmd = [sys.executable, "-m", "harness", "ci", commit, "--tree", str(tree), "--processes", str(args.processes),
           "--recheck-processes", str(args.recheck_processes), "--threshold", str(args.threshold),
           "--json", str(out_json), "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1) or not out_json.exists():
        raise SystemExit(f"gate_proof: the gate failed to run (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    data = json.loads(out_json.read_text())
    data["wall_s_outer"] = wall
    return data


def describe(kind: str, i: int, data: dict) -> str:
    cases = data["cases"]
    flagged = [c["case_id"] for c in cases if c["verdict"] in ("slower", "broken")]
    naive = [c for c in cases if c["case_id"].startswith(f"{SLOW_VARIANT}/") and c["time_ratio"] is not None]
    others = [c for c in cases if not c["case_id"].startswith(f"{SLOW_VARIANT}/") and c["time_ratio"] is not None]
    fmt = lambda cs: ", ".join(f"{c['time_ratio']:.2f}" for c in cs)  # noqa: E731
    return (f"{kind:4s} run {i + 1:2d}: exit {data['exit_code']}  {data['wall_s_outer']:5.0f} s  flagged "
            f"{len(flagged)} ({', '.join(c.split('/cpu/')[0] + '/' + c.split('/')[4] for c in flagged) or '-'})"
            f"{'  rechecked ' + str(len(data['rechecked'])) if data['rechecked'] else ''}\n"
            f"           {SLOW_VARIANT} ratios {fmt(naive)}; other ratios max "
            f"{max((c['time_ratio'] for c in others), default=float('nan')):.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", default="HEAD", help="commit to test (default: HEAD)")
    p.add_argument("--runs", type=int, default=10, help="gate runs per kind (default: 10)")
    p.add_argument("--processes", type=int, default=5, help="process pairs per gate run (default: 5)")
    p.add_argument("--recheck-processes", dest="recheck_processes", type=int, default=8,
                   help="more pairs for flagged cases (default: 8)")
    p.add_argument("--threshold", type=float, default=1.10)
    p.add_argument("--out", help="write every run's figures to this JSON file")
    args = p.parse_args(argv)

    commit = git("rev-parse", "--verify", f"{args.ref}^{{commit}}")
    tmp = Path(tempfile.mkdtemp(prefix="attnbench-proof-"))
    trees = {"slow": tmp / "slow", "same": tmp / "same"}
    started = time.perf_counter()
    results: dict[str, list[dict]] = {"slow": [], "same": []}
    try:
        for tree in trees.values():
            git("worktree", "add", "--detach", str(tree), commit)
        make_slow_copy(trees["slow"])
        print(f"gate proof on {commit[:10]}: {args.runs} runs with {SLOW_VARIANT} slowed 1.5x and {args.runs} on "
              f"unchanged code; {args.processes} process pairs, {args.recheck_processes} recheck pairs, threshold "
              f"{args.threshold:g}", flush=True)
        print(git("diff", "--stat", cwd=trees["slow"]), flush=True)
        for i in range(args.runs):
            for kind in ("slow", "same") if i % 2 == 0 else ("same", "slow"):
                data = run_gate(commit, trees[kind], args, tmp / f"{kind}-{i}.json")
                results[kind].append(data)
                print(describe(kind, i, data), flush=True)
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)
    wall = time.perf_counter() - started

    slow_flagged = sum(d["exit_code"] == 1 for d in results["slow"])
    same_flagged = sum(d["exit_code"] == 1 for d in results["same"])
    naive_ids = sorted({c["case_id"] for d in results["slow"] for c in d["cases"]
                        if c["case_id"].startswith(f"{SLOW_VARIANT}/")})
    print(f"\nslowed {SLOW_VARIANT} 1.5x: gate failed {slow_flagged}/{len(results['slow'])} runs")
    for cid in naive_ids:
        rows = [c for d in results["slow"] for c in d["cases"] if c["case_id"] == cid]
        hits = sum(c["verdict"] == "slower" for c in rows)
        ratios = sorted(c["time_ratio"] for c in rows if c["time_ratio"] is not None)
        print(f"  {cid}: flagged {hits}/{len(rows)}, normalized ratio {ratios[0]:.2f}..{ratios[-1]:.2f} "
              f"(median {ratios[len(ratios) // 2]:.2f})")
    wrong = [c for d in results["slow"] for c in d["cases"]
             if not c["case_id"].startswith(f"{SLOW_VARIANT}/") and c["verdict"] == "slower"]
    print(f"  other cases flagged in slowed runs: {len(wrong)}")
    same_rows = [c for d in results["same"] for c in d["cases"] if c["time_ratio"] is not None]
    first_round = sum(len(d["rechecked"]) for d in results["same"])
    print(f"unchanged code: gate failed {same_flagged}/{len(results['same'])} runs; cases flagged in a first "
          f"round and cleared by the recheck: {first_round}")
    print(f"  normalized ratios {min(c['time_ratio'] for c in same_rows):.2f}..{max(c['time_ratio'] for c in same_rows):.2f}, "
          f"raw {min(c['time_ratio_raw'] for c in same_rows):.2f}..{max(c['time_ratio_raw'] for c in same_rows):.2f}, "
          f"highest CI lower bound {max(c['time_ratio_lo'] for c in same_rows):.3f} (threshold {args.threshold:g})")
    gate_walls = [d["wall_s_outer"] for k in results for d in results[k]]
    print(f"wall time: {wall:.0f} s in all; one gate run {min(gate_walls):.0f}..{max(gate_walls):.0f} s "
          f"(median {sorted(gate_walls)[len(gate_walls) // 2]:.0f} s)")
    if args.out:
        Path(args.out).write_text(json.dumps({"commit": commit, "args": vars(args), "wall_s": wall,
                                              "results": results}, indent=2))
    ok = slow_flagged == len(results["slow"]) and same_flagged == 0
    print("PROOF " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
