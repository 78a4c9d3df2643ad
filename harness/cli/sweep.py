"""`attnbench sweep`: measure variants over a grid into a run folder, or finish one with --resume."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.options import (
    add_executor_options,
    add_sweep_options,
    check_out_dir,
    execution_options,
    grid_overrides,
    sweep_config_from_args,
)


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.run.sweep import run_sweep  # lazy: start-up

    options = execution_options(args)
    if args.resume:
        # Execution flags change how the remaining cases run; a grid flag must agree with the run's grid.
        config = None
        if grid_overrides(args):  # the run's own sweep with the flags given: only those are compared
            from harness.store.load import read_meta

            stored = read_meta(Path(args.resume), "cannot resume").get("sweep")
            config = sweep_config_from_args(args, base=stored if isinstance(stored, dict) else None)
        run_dir = run_sweep(config, out=args.out, resume=args.resume, quiet=args.quiet, options=options)
    else:
        config = sweep_config_from_args(args)
        check_out_dir(args.out)
        run_dir = run_sweep(config, out=args.out, quiet=args.quiet)
    print(f"results: {run_dir}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="measure variants over a grid into a tidy table under results/",
                       description="Run a sweep: every variant x pattern x causal x shape x dtype x pass becomes one "
                                   "row (status ok, unsupported, oom, timeout or error, with a reason) with time "
                                   "(median, IQR, raw samples), peak memory, FLOPs, achieved FLOP/s and error "
                                   "against the float64 reference. Rows are journaled as they finish; Ctrl-C, "
                                   "SIGTERM and SIGHUP keep them and --resume finishes the run.")
    add_sweep_options(p)
    add_executor_options(p)
    p.add_argument("--out", help="run folder (default: results/<run-id>)")
    p.add_argument("--resume", metavar="DIR", help="finish an interrupted run in DIR (in DIR itself) without redoing "
                   "finished cases; every execution option (--isolate, --budget-s, --timeout-s, --retries, "
                   "--ceiling-retries, --recheck-retries, --rounds, --short-rounds, --recheck-wait-s, --trust-budget, "
                   "--allocator, --compile-ahead, --executor, --ray-address, --ray-cpus-per-case) may change how the "
                   "rest run; "
                   "the executor is local unless given")
    p.set_defaults(func=cmd_sweep)
