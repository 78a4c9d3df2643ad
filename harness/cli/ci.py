"""`attnbench ci BASE_REF`: a performance regression gate for CI, built on `attnbench compare`'s statistics.

1. BASE_REF is resolved to a commit and checked out with ``git worktree add --detach`` into a temporary
   folder (removed afterwards). The tree under test is the working tree (``--tree``, default: the git
   checkout of the current directory). The cases are the regression preset
   (``harness/run/presets/regression.toml``), expanded by *this* harness.
2. Both sides are measured on this machine, in this job, in fresh worker processes that come in
   pairs (one per side, ``--processes`` pairs). Within a pair every case is measured in four blocks,
   A B B A (B A A B in odd pairs), one process waiting while the other measures, so load that comes
   and goes hits both sides alike. Each process times the calibration kernel (float32 512x512 matmul,
   ``harness.bench.timing``) just before its first block of every case. Both sides run the worker of
   *this* harness (``harness/run/worker.py``) with their own tree first on PYTHONPATH, so the timing
   loop is the same for both and only the code under test differs; each worker names the files it
   imported and the gate stops if they are outside its tree (``harness.run.gate``). The clock is the
   measuring thread's CPU time (``--clock cpu``), which leaves out time spent preempted by other
   processes; one torch thread per worker.
3. Per process and case: the mean of its two block medians divided by the process's calibration figure
   (the median of its calibrations: the speed of the machine as that process saw it). Per pair: the
   ratio new / base of those figures; load the two processes of a pair shared cancels in it. The
   ratio is the median over pairs (of the log ratios), its interval a bootstrap over whole pairs
   (seed fixed per case), the verdict ``harness.analysis.stats.time_verdict``'s: slower only when the
   whole interval is above ``--threshold`` (``harness.analysis.gate.judge``). Each process also
   measures, once per case, the peak memory of one call (allocator events) and the forward error
   against its tree's float64 reference: more memory (5% and 64 KiB) or a less accurate result
   (``attnbench compare``'s rules) fails the gate without statistics.
4. Flagged cases are measured again in ``--recheck-processes`` fresh pairs and judged on those pairs
   alone, not pooled with the pairs that raised the flag: a fluke is not confirmed, a real slowdown is.
5. A slowdown is *accepted* (reported, exit 0) when a commit message in BASE_REF..HEAD of the tested
   tree carries ``[accept-regression: <case-id substring>[, ...]]`` or ``[accept-regression: all]``.
   The threshold is never loosened.

Prints a Markdown verdict (also appended to ``$GITHUB_STEP_SUMMARY`` when that is set). Exit status:
1 on a slowdown no marker accepts, or on a case that ran at BASE_REF and fails on the tested tree; 2 on
bad input (an unknown ref, not a git checkout) or when a side could not be measured; 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness.analysis.compare import summarize
from harness.analysis.gate import (
    DEFAULT_PROCESSES,
    DEFAULT_RECHECK_PROCESSES,
    DEFAULT_THREADS,
    Measurements,
    judge,
    merge_recheck,
)
from harness.analysis.stats import check_threshold
from harness.core.errors import InputError
from harness.render.compare import gate_markdown
from harness.render.units import to_pct
from harness.run.gate import (
    WorkerError,
    accept_markers,
    measure_pairs,
    repo_root,
    resolve_ref,
)
from harness.store.git import git


# ---- the command ------------------------------------------------------------------------------
def cmd_ci(args: argparse.Namespace) -> int:
    # local: run.config and core.registry import torch; keeps `attnbench --help` fast
    from harness.core.registry import get_variant  # lazy: start-up
    from harness.run.config import build_config, expand, load_toml  # lazy: start-up

    check_threshold(args.threshold)
    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    for name in ("processes", "recheck_processes"):
        if getattr(args, name) < (2 if name == "processes" else 0):
            raise InputError(f"--{name.replace('_', '-')} must be >= {2 if name == 'processes' else 0}, got "
                             f"{getattr(args, name)}; hint: 5 per side is the default")
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    tree = repo_root(Path(args.tree or os.getcwd()).resolve())
    base_sha = resolve_ref(tree, args.base_ref)
    data = load_toml(args.config, False) if args.config else load_toml(args.preset, True)
    if args.budget_s is not None:
        data["budget_s"] = args.budget_s
    config = build_config(data)
    cases = [c for c in expand(config) if not get_variant(c.variant, **dict(c.params)).not_supported_reasons(c)]
    records = [{"case_id": c.id, **c.to_record()} for c in cases]
    if not records:
        raise InputError(f"{args.config or 'preset ' + args.preset} has no case this machine can run; hint: "
                         "`attnbench list` says why")
    accept = accept_markers(tree, base_sha)
    head = git(tree, "rev-parse", "--short", "HEAD", check=False) or "?"
    dirty = bool(git(tree, "status", "--porcelain", "--untracked-files=no", check=False))
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="attnbench-ci-"))
    worktree = tmp / "base"
    ids = [r["case_id"] for r in records]
    dtypes = {r["case_id"]: r["dtype"] for r in records}
    timeout_s = args.timeout_s if args.timeout_s is not None else config.timeout_s + 60.0  # + start-up
    measure = dict(budget_s=config.budget_s, threads=args.threads, clock=args.clock, timeout_s=timeout_s, log=log)
    try:
        git(tree, "worktree", "add", "--detach", str(worktree), base_sha)
        trees = {"base": worktree, "new": tree}
        m = Measurements()
        log(f"attnbench ci: {len(records)} cases, base {base_sha[:10]} ({args.base_ref}) checked out in {worktree} vs "
            f"{tree} (HEAD {head}{', dirty' if dirty else ''}); {args.processes} process pairs")
        try:
            measure_pairs(trees, records, args.processes, m, **measure)
            frame = judge(ids, m, args.threshold, args.confidence, accept, dtypes)
            flagged = frame.loc[frame["verdict"] == "slower", "case_id"].tolist()
            rechecked = []
            if flagged and args.recheck_processes:
                log(f"re-measuring {len(flagged)} flagged case(s) in {args.recheck_processes} fresh process pairs, "
                    f"judged on those alone: {', '.join(flagged)}")
                rechecked = [r for r in records if r["case_id"] in flagged]
                fresh = Measurements()
                measure_pairs(trees, rechecked, args.recheck_processes, fresh, **measure)
                frame = merge_recheck(frame, judge(flagged, fresh, args.threshold, args.confidence, accept, dtypes))
        except WorkerError as exc:
            raise InputError(f"could not measure: {exc}") from None
    finally:
        git(tree, "worktree", "remove", "--force", str(worktree), check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        git(tree, "worktree", "prune", check=False)
    wall = time.perf_counter() - started
    s = summarize(frame)
    failing = s["failing"]
    accepted = frame.loc[frame["verdict"] == "accepted", "case_id"].tolist()
    title = "REGRESSION" if failing else ("regression accepted" if accepted else "no regression")
    lines = [f"base `{base_sha[:10]}` ({args.base_ref}) vs `{tree}` (HEAD `{head}`{', uncommitted changes' if dirty else ''}), "
             f"same machine, same job, {wall:.0f} s",
             f"{len(records)} cases; {args.processes} fresh processes per side, run in pairs, every case measured "
             f"in blocks A B B A (B A A B in odd pairs); {args.threads} thread(s), {args.clock} time; each process "
             "times the calibration kernel beside every case",
             f"slower = {to_pct(args.confidence):g}% bootstrap CI (over pairs) lower bound of new/base above "
             f"{args.threshold:g}, where new/base is the median over process pairs of the pair's ratio of "
             "calibration-normalized medians; more memory = peak above base by 5% and 64 KiB; less accurate = error "
             "above the dtype's tolerance or 10x base's"]
    if rechecked:
        lines.append(f"re-measured {len(rechecked)} flagged case(s) in {args.recheck_processes} fresh process pairs, "
                     "judged on those pairs alone (the first round's figures are in the reason)")
    if failing:
        lines.append(f"**regressed: {', '.join(f'`{c}`' for c in failing)}**; to accept an intentional slowdown, "
                     "put `[accept-regression: <case-id substring or all>]` in the commit message")
    if accepted:
        lines.append(f"accepted by commit marker: {', '.join(f'`{c}`' for c in accepted)}")
    text = gate_markdown(frame, title, lines)
    print(text)
    if args.json:
        records_out = json.loads(frame.to_json(orient="records"))
        Path(args.json).write_text(json.dumps({
            "base_ref": args.base_ref, "base_commit": base_sha, "tree": str(tree), "head": head, "dirty": dirty,
            "exit_code": 1 if failing else 0, "title": title, "wall_s": wall, "processes": args.processes,
            "recheck_processes": args.recheck_processes, "rechecked": [r["case_id"] for r in rechecked],
            "threshold": args.threshold, "confidence": args.confidence, "clock": args.clock, "threads": args.threads,
            "accept_markers": accept, "cases": records_out}, indent=2))
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        with open(summary_path, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    if s["compared"] == 0:  # nothing could be compared: not a pass
        print("attnbench ci: error: no case could be compared (every case erred, did not run or is new); "
              "hint: `attnbench list` says why a variant cannot run here", file=sys.stderr)
        return 2
    return 1 if failing else 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "ci", help="performance regression gate: this tree vs BASE_REF, measured here, interleaved",
        description="Measure the regression preset on BASE_REF (checked out in a temporary git worktree) and on "
                    "the working tree, on this machine, in fresh processes alternating A B B A, each timing a "
                    "calibration kernel beside every case; compare calibration-normalized medians with "
                    "`attnbench compare`'s bootstrap interval; re-measure flagged cases; print a Markdown verdict "
                    "(also appended to $GITHUB_STEP_SUMMARY). Exit 1 on a regression that no "
                    "[accept-regression: ...] marker in BASE_REF..HEAD accepts, 2 on bad input, else 0.")
    p.add_argument("base_ref", metavar="BASE_REF", help="git ref to compare against, e.g. origin/main or HEAD~1")
    p.add_argument("--tree", help="the checkout to test (default: the git checkout of the current directory)")
    p.add_argument("--preset", default="regression", help="preset to measure (default: regression)")
    p.add_argument("--config", help="a sweep TOML instead of the preset")
    p.add_argument("--processes", type=int, default=DEFAULT_PROCESSES,
                   help=f"fresh processes per side, run in pairs (default: {DEFAULT_PROCESSES})")
    p.add_argument("--recheck-processes", dest="recheck_processes", type=int, default=DEFAULT_RECHECK_PROCESSES,
                   help="more processes per side for flagged cases, 0 for none "
                        f"(default: {DEFAULT_RECHECK_PROCESSES})")
    p.add_argument("--threshold", type=float, default=1.10, help="slower when the ratio's CI is above this (1.10)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of the interval (default: 0.95)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads per worker (default: 1)")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="cpu: CPU time of the measuring thread(s), blind to time spent preempted by other "
                        "processes (default); wall: elapsed time")
    p.add_argument("--budget-s", dest="budget_s", type=float, help="timing seconds per case per process "
                                                                  "(default: the preset's budget_s)")
    p.add_argument("--timeout-s", dest="timeout_s", type=float,
                   help="longest wait for one answer of a worker (default: the preset's timeout_s + 60)")
    p.add_argument("--json", metavar="FILE", help="also write the verdict and every case's figures to FILE as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_ci)
