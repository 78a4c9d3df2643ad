"""`attnbench compare BASE_RUN NEW_RUN`: argument checks, loading both runs, output and exit status.

The statistics (ratios of medians, bootstrap intervals, calibration normalization, verdicts) are
``harness.analysis.compare``'s; the text, Markdown, HTML and JSON output is ``harness.render.compare``'s.
"""

from __future__ import annotations

import argparse
import sys

from harness.analysis.compare import (
    FAILING,
    VERDICT_HELP,
    VERDICTS,
    compare_runs,
    load_for_compare,
    summarize,
)
from harness.analysis.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_THRESHOLD,
    check_threshold,
)
from harness.bench.heap import allocator_of
from harness.core.errors import InputError
from harness.render.compare import FORMATS, RENDERERS


def cmd_compare(args: argparse.Namespace) -> int:
    if args.format not in RENDERERS:
        raise InputError(f"unknown format {args.format!r}; valid formats: {', '.join(FORMATS)}")
    check_threshold(args.threshold)
    if not 0.5 <= args.confidence < 1.0:
        raise InputError(f"confidence must be in [0.5, 1), got {args.confidence!r}; hint: --confidence 0.95")
    base_df, base_meta = load_for_compare(args.base_run, "BASE")
    new_df, new_meta = load_for_compare(args.new_run, "NEW")
    kinds = [allocator_of(m.get("allocator")) or "system" for m in (base_meta, new_meta)]
    if kinds[0] != kinds[1]:
        print(f"note: the runs' host allocators differ (base {kinds[0]}, new {kinds[1]}; see `attnbench show`): a "
              "kernel with big temporaries may read faster or slower from that alone", file=sys.stderr)
    result = compare_runs(base_df, base_meta, new_df, new_meta, args.threshold, args.confidence)
    summary = summarize(result)
    if summary["exit_code"] == 2:
        raise InputError(f"no case is in both {args.base_run} ({len(base_df)} rows) and {args.new_run} "
                         f"({len(new_df)} rows) with status ok in either; hint: compare runs of the same sweep")
    sys.stdout.write(RENDERERS[args.format](result, str(args.base_run), str(args.new_run)))
    if summary["failing"] and args.format != "json":
        print(f"regression: {', '.join(summary['failing'])}", file=sys.stderr)
    return summary["exit_code"]


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="compare two runs case by case: time and memory ratios, confidence, verdict",
        description="Compare NEW_RUN with BASE_RUN. For every case in both runs: new/base ratio of median time "
                    "(raw, and normalized by each run's calibration kernel so a uniformly slower machine is not a "
                    "regression) with a bootstrap confidence interval, the peak-memory ratio and verdict (more, "
                    "less, same), the relative error's verdict (worse, missing, same), for an approximate pattern "
                    "its fidelity's verdict (output error against global attention, or perplexity: worse, missing, "
                    "better, same), and a verdict per case. "
                    + "; ".join(f"{v}: {VERDICT_HELP[v]}" for v in VERDICTS) + ". Exit status: 1 if any case is "
                    + ", ".join(FAILING) + ", uses more peak memory (above 5% and 64 KiB), is less accurate (error "
                    "verdict worse or missing) or less faithful (fidelity verdict worse or missing); 2 if no case could be compared or a run is unreadable; 0 otherwise. "
                    "See docs/compare.md.")
    p.add_argument("base_run", metavar="BASE_RUN", help="run folder of the baseline (made by attnbench sweep)")
    p.add_argument("new_run", metavar="NEW_RUN", help="run folder to judge against it")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="new/base time ratio above which a case is slower (default: 1.10)")
    p.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                   help="confidence level of the bootstrap interval (default: 0.95)")
    p.add_argument("--format", default="text", choices=FORMATS, help="output format (default: text)")
    p.set_defaults(func=cmd_compare)
