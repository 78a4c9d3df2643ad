"""The `attnbench` command line. Every command has --help; bad input exits 2 with a one-line message.
"""

from __future__ import annotations

import argparse
import json


# ---- list -------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from harness.core.registry import LOAD_ERRORS, discover  # lazy: start-up

    rows = []
    for name, cls in discover().items():
        variant = cls()
        devices = {}
        for device in ("cpu", "cuda"):
            reasons = variant.device_reasons(device)
            bwd = variant.backward_reasons(device)  # from a fwd_bwd probe: flex has none on CPU
            devices[device] = {"available": not reasons, "reasons": reasons, "backward": not bwd,
                               "backward_reasons": bwd}
        rows.append({"name": name, "description": cls.description, "patterns": list(cls.patterns),
                     "dtypes": list(cls.dtypes), "backward": cls.backward, "params": variant.params,
                     "devices": devices, "load_error": None})
    for name, err in LOAD_ERRORS.items():  # a plug-in that failed to import: listed, with why
        reasons = [f"failed to load: {err}"]
        rows.append({"name": name, "description": f"plug-in that failed to load ({err})", "patterns": [],
                     "dtypes": [], "backward": False, "params": {},
                     "devices": {d: {"available": False, "reasons": reasons, "backward": False,
                                     "backward_reasons": reasons} for d in ("cpu", "cuda")},
                     "load_error": err})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console  # lazy: start-up
    from rich.markup import escape  # lazy: start-up

    console = Console(highlight=False, soft_wrap=True)
    for row in rows:
        if row["load_error"] is not None:
            continue
        console.print(f"[bold]{escape(row['name'])}[/bold]: {escape(row['description'])}")
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items()) or "none"
        console.print(f"  patterns: {', '.join(row['patterns'])}; dtypes: {', '.join(row['dtypes'])}; "
                      f"params: {escape(params)}")
        for device, info in row["devices"].items():
            if info["available"]:
                bwd = "yes" if info["backward"] else f"no ({'; '.join(info['backward_reasons'])})"
                console.print(f"  {device}: [green]available[/green]; backward: {escape(bwd)}")
            else:
                console.print(f"  {device}: [yellow]unavailable[/yellow]")
                for reason in info["reasons"]:
                    console.print(f"    - {escape(reason)}")
    for name, err in LOAD_ERRORS.items():
        console.print(f"[red]plug-in {escape(name)} failed to load[/red]: {escape(err)}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("list", help="list every variant, its patterns, and per device whether it runs or why not",
                       description="List every registered variant (built-in and plug-in) with its patterns and, "
                                   "for cpu and cuda, 'available' or the reasons it cannot run.")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects instead of text")
    p.set_defaults(func=cmd_list)
