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


# ---- sweep ------------------------------------------------------------------------------------
_INT_AXES = {"seq_lens": "--seq-lens", "heads": "--heads", "batch": "--batch", "head_dims": "--head-dims"}
_STR_AXES = {"variants": "--variants", "patterns": "--patterns", "dtypes": "--dtypes", "passes": "--passes"}


def _ints(text: str, flag: str) -> list[int]:
    out = []
    for item in _split(text) or []:
        try:
            out.append(int(item))
        except ValueError:
            raise InputError(f"{flag} takes comma-separated integers, got {item!r}; hint: {flag} 512,1024") from None
    return out


def sweep_config_from_args(args: argparse.Namespace, default_preset: str = "quick"):
    """Preset or --config TOML, then every axis override from the command line, into a frozen config."""
    from harness.sweep import build_config, load_toml

    if args.preset and args.config:
        raise InputError("give --preset or --config, not both")
    data = load_toml(args.config, False) if args.config else load_toml(args.preset or default_preset, True)
    for key, flag in _INT_AXES.items():
        value = getattr(args, key)
        if value:
            data[key] = _ints(value, flag)
    for key, flag in _STR_AXES.items():
        value = getattr(args, key)
        if value:
            data[key] = _split(value)
    if args.causal:
        data["causal"] = {"both": [False, True], "yes": [True], "no": [False]}[args.causal]
    for key in ("device", "window", "budget_s", "timeout_s"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    if args.segment is not None:
        data["segment"] = args.segment if args.segment == "sqrt" else _ints(args.segment, "--segment")[0]
    if args.isolate:
        data["isolate"] = True
    return build_config(data)


def _sweep_has_overrides(args) -> bool:
    keys = [*_INT_AXES, *_STR_AXES, "causal", "device", "window", "budget_s", "timeout_s", "segment", "preset", "config"]
    return any(getattr(args, k) for k in keys) or args.isolate


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.runner import run_sweep

    if args.resume:
        config = sweep_config_from_args(args) if _sweep_has_overrides(args) else None
        run_dir = run_sweep(config, resume=args.resume, quiet=args.quiet)
    else:
        run_dir = run_sweep(sweep_config_from_args(args), out=args.out, quiet=args.quiet)
    print(f"results: {run_dir}")
    return 0


def add_sweep_options(p: argparse.ArgumentParser, default_preset: str = "quick") -> None:
    p.add_argument("--preset", help=f"a preset shipped with attnbench: quick, default, long, gpu (default: {default_preset})")
    p.add_argument("--config", help="a sweep TOML file (same keys as the presets in harness/presets/)")
    p.add_argument("--variants", help="comma-separated variant names, or all")
    p.add_argument("--patterns", help="comma-separated: global,local,hierarchical")
    p.add_argument("--causal", choices=["no", "yes", "both"], help="causal masking: no, yes or both")
    p.add_argument("--seq-lens", dest="seq_lens", help="comma-separated sequence lengths, e.g. 512,1024")
    p.add_argument("--heads", help="comma-separated head counts")
    p.add_argument("--batch", help="comma-separated batch sizes")
    p.add_argument("--head-dims", dest="head_dims", help="comma-separated head dims")
    p.add_argument("--dtypes", help="comma-separated: float32,float16,bfloat16")
    p.add_argument("--device", help="cpu, cuda or auto")
    p.add_argument("--passes", help="comma-separated: fwd,fwd_bwd")
    p.add_argument("--window", type=int, help="window radius w of the local pattern")
    p.add_argument("--segment", help="segment length s of the hierarchical pattern, or sqrt (round(sqrt(N)))")
    p.add_argument("--budget-s", dest="budget_s", type=float, help="seconds of timing per case (default from preset)")
    p.add_argument("--timeout-s", dest="timeout_s", type=float, help="upper bound on one case, in seconds")
    p.add_argument("--isolate", action="store_true", help="run each case in a fresh subprocess")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")


# ---- show -------------------------------------------------------------------------------------
def cmd_show(args: argparse.Namespace) -> int:
    import pandas as pd

    from harness.results import load_run

    df, meta = load_run(args.run_dir)
    prov = meta["provenance"]
    print(f"run {meta['run_id']} ({meta['status']}): {len(df)} rows on {prov['device']} ({prov['device_name']}), "
          f"torch {prov['torch_version']}, commit {str(prov['git_commit'])[:10]}{' (dirty)' if prov['git_dirty'] else ''}")
    if df.empty:
        return 0
    table = pd.crosstab(df["variant"], df["status"])
    print(table.to_string())
    ok = df[df["status"] == "ok"]
    if len(ok):
        cols = ["variant", "pattern", "causal", "seq_len", "pass", "dtype"]
        view = ok[cols].copy()
        view["median_ms"] = (ok["time_s_median"] * 1e3).round(3)
        view["peak_MiB"] = (ok["peak_mem_bytes"] / 2**20).round(1)
        view["rel_error"] = ok["rel_error"].map(lambda e: f"{e:.1e}" if pd.notna(e) else "")
        if args.all:
            print(view.to_string(index=False))
    bad = df[~df["status"].isin(["ok", "unsupported"])]
    for _, row in bad.iterrows():
        print(f"{row['status']:>8}  {row['case_id']}: {row['reason']}")
    return 0


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

    p = sub.add_parser("sweep", help="measure variants over a grid into a tidy table under results/",
                       description="Run a sweep: every variant x pattern x causal x shape x dtype x pass becomes one "
                                   "row (status ok, unsupported, oom, timeout or error, with a reason) with time "
                                   "(median, IQR, raw samples), peak memory, FLOPs, achieved FLOP/s and error "
                                   "against the float64 reference. Rows are journaled as they finish; Ctrl-C keeps "
                                   "them and --resume finishes the run.")
    add_sweep_options(p)
    p.add_argument("--out", help="run folder (default: results/<run-id>)")
    p.add_argument("--resume", metavar="DIR", help="finish an interrupted run in DIR without redoing finished cases")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("show", help="print a run's status table (and its measurements with --all)",
                       description="Summarize a run folder: provenance, a variant x status table, every oom, "
                                   "timeout or error with its reason, and with --all every measured row.")
    p.add_argument("run_dir", help="a run folder, e.g. results/<run-id>")
    p.add_argument("--all", action="store_true", help="also print every ok row (median ms, peak MiB, error)")
    p.set_defaults(func=cmd_show)

    import importlib

    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register_cli(sub)
    return parser


# Modules that add commands: each exposes register_cli(subparsers) and imports nothing heavy at import time.
_COMMAND_MODULES = ["harness.report", "harness.compare", "harness.ci"]


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
