"""`attnbench show RUN_DIR`: a run's provenance, a variant x status table, every cell that failed with
its reason, with ``--all`` every measured row in milliseconds and MiB, and with ``--flagged [FLAGS]``
every untrusted cell with its flags (only those with one of FLAGS when given).
"""

from __future__ import annotations

import argparse

from harness.render.units import to_mib, to_ms


# ---- show -------------------------------------------------------------------------------------
def cmd_show(args: argparse.Namespace) -> int:
    # local: pandas is imported when the command runs, not at `attnbench --help`
    import pandas as pd  # lazy: start-up

    from harness.analysis.trust import parse_flag_filter  # lazy: start-up
    from harness.bench.heap import describe  # lazy: start-up
    from harness.store.load import load_run  # lazy: start-up

    wanted = parse_flag_filter(args.flagged) if args.flagged is not None else None
    df, meta = load_run(args.run_dir)
    prov = meta["provenance"]
    print(f"run {meta['run_id']} ({meta['status']}): {len(df)} rows on {prov['device']} ({prov['device_name']}), "
          f"torch {prov['torch_version']}, commit {str(prov['git_commit'])[:10]}{' (dirty)' if prov['git_dirty'] else ''}")
    if df.empty:
        return 0
    print(f"allocator: {describe(meta.get('allocator'))}")
    table = pd.crosstab(df["variant"], df["status"])
    print(table.to_string())
    print(trust_line(meta.get("trust")))
    ok = df[df["status"] == "ok"]
    if len(ok):
        cols = ["variant", "pattern", "causal", "seq_len", "pass", "dtype"]
        view = ok[cols].copy()
        view["median_ms"] = to_ms(ok["time_s_median"]).round(3)
        view["peak_MiB"] = to_mib(ok["peak_mem_bytes"]).round(1)
        view["rel_error"] = ok["rel_error"].map(lambda e: f"{e:.1e}" if pd.notna(e) else "")
        view["trusted"] = ok["time_trusted"].map(lambda x: "n/a" if pd.isna(x) else ("yes" if x else "NO"))
        if args.all:
            print(view.to_string(index=False))
        if wanted is not None:
            print_flagged(ok, wanted)
    bad = df[~df["status"].isin(["ok", "unsupported"])]
    for _, row in bad.iterrows():
        print(f"{row['status']:>8}  {row['case_id']}: {row['reason']}")
    return 0


def print_flagged(ok, wanted: list[str]) -> None:
    """Every flagged cell with its flags; with ``wanted``, only cells with one of those flags."""
    import json

    from harness.analysis.trust import flag_name  # lazy: start-up

    shown = 0
    for _, row in ok.iterrows():
        flags = json.loads(row["time_flags"]) if isinstance(row.get("time_flags"), str) and row["time_flags"] else []
        if flags and (not wanted or any(flag_name(f) in wanted for f in flags)):
            print(f"flagged  {row['case_id']}: {'; '.join(flags)}")
            shown += 1
    print(f"{shown} flagged cell(s){' with ' + ' or '.join(wanted) if wanted else ''}")


def trust_line(trust: dict | None) -> str:
    """run.json's trust summary in one line (runs written before trust flags: not assessed)."""
    if not trust or not trust.get("measured"):
        return "trust: not assessed (a run written before trust flags, or nothing measured)"
    from harness.render.trust_text import evidence_clauses  # lazy: start-up

    flags = ", ".join(f"{k} {v}" for k, v in sorted(trust.get("flags", {}).items(), key=lambda kv: -kv[1]))
    rounds = "; ".join(evidence_clauses(trust))
    return (f"trust: {trust['trusted']} of {trust['measured']} measured cells trusted, {trust['flagged']} flagged"
            + (f" ({flags})" if flags else "") + (f", {trust['not_assessed']} not assessed" if trust.get("not_assessed")
                                                  else "") + (f"; {rounds}" if rounds else ""))


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("show", help="print a run's status table (and its measurements with --all)",
                       description="Summarize a run folder: provenance, a variant x status table, every oom, "
                                   "timeout or error with its reason, and with --all every measured row.")
    p.add_argument("run_dir", help="a run folder, e.g. results/<run-id>")
    p.add_argument("--all", action="store_true", help="also print every ok row (median ms, peak MiB, error)")
    p.add_argument("--flagged", nargs="?", const="", metavar="FLAGS",
                   help="also print every flagged (untrusted) cell with its flags; FLAGS: comma-separated flag "
                        "names to keep (few calls, noisy, bimodal, host busy, slow machine, above ceiling, page faults, "
                        "throttled, unreproduced, drop, ...)")
    p.set_defaults(func=cmd_show)
