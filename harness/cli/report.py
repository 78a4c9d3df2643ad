"""`attnbench report` (one self-contained HTML file from one or more run folders, written by
``harness.render.report``) and `attnbench run` (the main job: the default sweep for this machine,
then its report).
"""

from __future__ import annotations

import argparse

from harness.cli.options import add_sweep_options, check_out_dir, sweep_config_from_args
from harness.core.errors import InputError
from harness.core.names import DEFAULT_BASELINE


# ---- commands ---------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from harness.render.report import build_report  # lazy: start-up (the report's tables import torch)

    out, index = build_report(args.run_dirs, out=args.output, baseline=args.baseline, reports_root=args.reports_root)
    print(f"report: {out}")
    if index is not None:
        print(f"index: {index}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from harness.render.report import build_report  # lazy: start-up
    from harness.run.sweep import run_sweep  # lazy: start-up (torch)

    config = sweep_config_from_args(args, default_preset="default")
    if args.baseline is not None and args.baseline not in config.grid.variants:
        raise InputError(f"baseline variant {args.baseline!r} is not in this sweep ({', '.join(config.grid.variants)}); "
                         f"hint: --baseline {config.grid.variants[0]}, or add it to --variants")
    check_out_dir(args.out)
    run_dir = run_sweep(config, out=args.out, quiet=args.quiet)
    out, index = build_report([run_dir], baseline=args.baseline, reports_root=args.reports_root)
    print(f"results: {run_dir}")
    print(f"report: {out}")
    if index is not None:
        print(f"index: {index}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="write one self-contained HTML report of one or more runs",
        description="Write one self-contained HTML file (plots embedded, no network needed) for one or more "
                    "run folders: environment and sweep, time and peak memory vs N (log-log), scaling exponents, "
                    "crossovers, speedup and memory saving vs a baseline, achieved FLOP/s vs the measured "
                    "ceiling, worst errors, every cell that did not run and why, and the tidy tables. Several "
                    "runs are shown side by side. Also rewrites <reports root>/index.html.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folder(s) made by `attnbench sweep`")
    p.add_argument("-o", "--output", help="report file (default: reports/<name>/index.html, name from the run ids)")
    p.add_argument("--baseline", help=f"variant that speedups and memory savings are relative to "
                                      f"(default: {DEFAULT_BASELINE})")
    p.add_argument("--reports-root", dest="reports_root",
                   help="folder of reports and of their index.html (default: reports)")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser(
        "run", help="the main job: the default sweep for this machine, then its report",
        description="Run the `default` preset sweep (CUDA float16 when torch sees a GPU, else CPU float32), "
                    "write it under results/<run-id>, then its report under reports/<run-id>/index.html. "
                    "Every sweep option overrides the preset.")
    add_sweep_options(p, default_preset="default")
    p.add_argument("--out", help="run folder (default: results/<run-id>)")
    p.add_argument("--baseline", help=f"baseline variant of the report (default: {DEFAULT_BASELINE})")
    p.add_argument("--reports-root", dest="reports_root",
                   help="folder of reports and of their index.html (default: reports)")
    p.set_defaults(func=cmd_run)
