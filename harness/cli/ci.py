"""`attnbench ci BASE_REF`: the performance regression gate (``harness.gate``), this tree against
BASE_REF, measured on this machine. This module parses the options; the gate does the rest.
"""

from __future__ import annotations

import argparse

from harness.gate import DEFAULT_PROCESSES, DEFAULT_RECHECK_PROCESSES, DEFAULT_THREADS


def cmd_ci(args: argparse.Namespace) -> int:
    # local: the gate imports pandas (and, to plan the cases, torch); keeps `attnbench --help` fast
    from harness.gate.run import GateConfig, run_gate  # lazy: start-up

    return run_gate(GateConfig(
        base_ref=args.base_ref, tree=args.tree, preset=args.preset, sweep_toml=args.config,
        processes=args.processes, recheck_processes=args.recheck_processes, threshold=args.threshold,
        confidence=args.confidence, threads=args.threads, clock=args.clock, budget_s=args.budget_s,
        timeout_s=args.timeout_s, json_path=args.json, quiet=args.quiet))


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
