"""The `attnbench` command line. Every command has --help; bad input exits 2 with a one-line message."""

from __future__ import annotations

import argparse
import json
import sys

from harness.patterns import InputError


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _known_variants(names: list[str] | None) -> list[str] | None:
    from harness.registry import discover

    if names is None:
        return None
    registry = discover()
    for name in names:
        if name not in registry:
            raise InputError(f"unknown variant {name!r}; valid variants: {', '.join(registry)}")
    return names


# ---- list -------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from harness.registry import LOAD_ERRORS, discover

    rows = []
    for name, cls in discover().items():
        variant = cls()
        devices = {}
        for device in ("cpu", "cuda"):
            reasons = variant.device_reasons(device)
            devices[device] = {"available": not reasons, "reasons": reasons}
        rows.append({"name": name, "description": cls.description, "patterns": list(cls.patterns),
                     "dtypes": list(cls.dtypes), "backward": cls.backward, "params": variant.params,
                     "devices": devices})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    for row in rows:
        console.print(f"[bold]{escape(row['name'])}[/bold]: {escape(row['description'])}")
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items()) or "none"
        console.print(f"  patterns: {', '.join(row['patterns'])}; dtypes: {', '.join(row['dtypes'])}; "
                      f"backward: {'yes' if row['backward'] else 'no'}; params: {escape(params)}")
        for device, info in row["devices"].items():
            if info["available"]:
                console.print(f"  {device}: [green]available[/green]")
            else:
                console.print(f"  {device}: [yellow]unavailable[/yellow]")
                for reason in info["reasons"]:
                    console.print(f"    - {escape(reason)}")
    for name, err in LOAD_ERRORS.items():
        console.print(f"[red]plug-in {escape(name)} failed to load[/red]: {escape(err)}")
    return 0


# ---- check ------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    from harness.case import DEVICES, DTYPES
    from harness.check import run_check

    if args.device not in DEVICES:
        raise InputError(f"unknown device {args.device!r}; valid devices: {', '.join(DEVICES)}")
    dtypes = _split(args.dtypes)
    for dt in dtypes or []:
        if dt not in DTYPES:
            raise InputError(f"unknown dtype {dt!r}; valid dtypes: {', '.join(DTYPES)}")
    variants = _known_variants(_split(args.variants))
    counts = {"ok": 0, "wrong": 0, "skipped": 0}
    wrong = []

    def show(res) -> None:
        if res.skipped:
            counts["skipped"] += 1
            if args.verbose:
                print(f"skip  {res.variant} {res.pattern} {res.pass_}: {'; '.join(res.reasons)}")
            return
        counts["ok" if res.ok else "wrong"] += 1
        if not res.ok:
            wrong.append(res)
            print(f"WRONG {res.describe()}", flush=True)
        elif args.verbose:
            print(f"ok    {res.describe()}", flush=True)

    run_check(args.device, variants, dtypes, on_result=show)
    print(f"attnbench check on {args.device}: {counts['ok']} correct, {counts['wrong']} wrong, "
          f"{counts['skipped']} skipped (unsupported; `attnbench list` says why)")
    return 1 if wrong else 0


# ---- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnbench", description="Benchmark and compare self-attention implementations.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list every variant, its patterns, and per device whether it runs or why not",
                       description="List every registered variant (built-in and plug-in) with its patterns and, "
                                   "for cpu and cuda, 'available' or the reasons it cannot run.")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects instead of text")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("check", help="check every available variant against the float64 reference",
                       description="Run each available variant on a small grid of awkward shapes (N=1, N not a "
                                   "multiple of any block, odd head dim, batch 3, non-contiguous inputs), causal "
                                   "and not, forward and backward, against the float64 reference. Exits 1 if any "
                                   "is wrong, naming variant, pattern, shape and error.")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--variants", help="comma-separated variant names (default: all)")
    p.add_argument("--dtypes", help="comma-separated dtypes (default: float32 on cpu; float32,float16,bfloat16 on cuda)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every result, skipped ones with reasons")
    p.set_defaults(func=cmd_check)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


_EXTRA_COMMANDS: list = []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"attnbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"attnbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
