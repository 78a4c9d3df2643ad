"""The `attnbench` command line. Every command has --help; bad input exits 2 with a one-line message.
"""

from __future__ import annotations

import argparse

from harness.cli.options import _known_variants, _split
from harness.core.errors import InputError


# ---- check ------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    from harness.bench.check import run_check  # lazy: start-up
    from harness.core.case import DEVICES, DTYPES  # lazy: start-up

    if args.device not in DEVICES:
        raise InputError(f"unknown device {args.device!r}; valid devices: {', '.join(DEVICES)}")
    dtypes = _split(args.dtypes)
    for dt in dtypes or []:
        if dt not in DTYPES:
            raise InputError(f"unknown dtype {dt!r}; valid dtypes: {', '.join(DTYPES)}")
    variants = _known_variants(_split(args.variants))
    counts = {"ok": 0, "wrong": 0, "raised": 0, "skipped": 0}
    wrong = []

    def show(res) -> None:
        if res.skipped:
            counts["skipped"] += 1
            if args.verbose:
                print(f"skip  {res.variant} {res.pattern} {res.pass_}: {'; '.join(res.reasons)}")
            return
        counts["ok" if res.ok else "raised" if res.exception else "wrong"] += 1
        if not res.ok:
            wrong.append(res)
            print(f"{'FAILED' if res.exception else 'WRONG '} {res.describe()}", flush=True)
        elif args.verbose:
            print(f"ok    {res.describe()}", flush=True)

    run_check(args.device, variants, dtypes, on_result=show)
    print(f"attnbench check on {args.device}: {counts['ok']} correct, {counts['wrong']} wrong, "
          f"{counts['raised']} raised an exception, {counts['skipped']} skipped (unsupported; "
          "`attnbench list` says why)")
    return 1 if wrong else 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("check", help="check every available variant against the float64 reference",
                       description="Run each available variant on a small grid of awkward shapes (N=1, N not a "
                                   "multiple of any block, odd head dim, batch 3, non-contiguous inputs), causal "
                                   "and not, forward and backward, against the float64 reference. Exits 1 if any "
                                   "is wrong, naming variant, pattern, shape and error.")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--variants", help="comma-separated variant names (default: all)")
    p.add_argument("--dtypes", help="comma-separated dtypes (default: float32 on cpu; float32,float16,bfloat16 on cuda)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every result, skipped ones with reasons")
    p.set_defaults(func=cmd_check)
