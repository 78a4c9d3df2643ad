"""The `attnbench` command line. Every command has --help; bad input exits 2 with a one-line message.
"""

from __future__ import annotations

import argparse

from harness.cli.options import (
    _sweep_has_overrides,
    add_executor_options,
    add_sweep_options,
    check_out_dir,
    executor_args,
    sweep_config_from_args,
)


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.run.sweep import EXECUTION_KEYS, run_sweep  # lazy: start-up

    if args.resume:
        # Execution flags change how the remaining cases run; any other flag must agree with the run's sweep.
        options = {k: getattr(args, k) for k in EXECUTION_KEYS if getattr(args, k) is not None and getattr(args, k) is not False}
        bare = argparse.Namespace(**{**vars(args), **dict.fromkeys(EXECUTION_KEYS)})
        config = sweep_config_from_args(args) if _sweep_has_overrides(bare) else None
        run_dir = run_sweep(config, out=args.out, resume=args.resume, quiet=args.quiet, options=options,
                            **executor_args(args))
    else:
        config = sweep_config_from_args(args)
        check_out_dir(args.out)
        run_dir = run_sweep(config, out=args.out, quiet=args.quiet, **executor_args(args))
    print(f"results: {run_dir}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="measure variants over a grid into a tidy table under results/",
                       description="Run a sweep: every variant x pattern x causal x shape x dtype x pass becomes one "
                                   "row (status ok, unsupported, oom, timeout or error, with a reason) with time "
                                   "(median, IQR, raw samples), peak memory, FLOPs, achieved FLOP/s and error "
                                   "against the float64 reference. Rows are journaled as they finish; Ctrl-C keeps "
                                   "them and --resume finishes the run.")
    add_sweep_options(p)
    add_executor_options(p)
    p.add_argument("--out", help="run folder (default: results/<run-id>)")
    p.add_argument("--resume", metavar="DIR", help="finish an interrupted run in DIR (in DIR itself) without redoing "
                   "finished cases; --isolate, --timeout-s, --budget-s, --retries, --rounds and --recheck-wait-s may change how the rest "
                   "run")
    p.set_defaults(func=cmd_sweep)
