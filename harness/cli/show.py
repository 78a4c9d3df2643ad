"""`attnbench show RUN_DIR`: a run's provenance, its trust verdict, where its time went (per phase and
per step of measuring), the variants that cannot run on its
device at all (once each, with their reasons), "which to use" per pattern, pass and length (the
report's table, ``harness.render.answer``), the cheapest configuration within 1%, 5% and 10% output
error of global attention where the rows have fidelity columns (``harness.render.quality``), a
variant x status table, every cell that failed with its
reason; with ``--all`` every measured row in milliseconds and MiB, with ``--flagged [FLAGS]`` every
untrusted cell with its flags (only those with one of FLAGS when given), and with ``--repro CASE_ID``
only the command that measures that case again on its own.
"""

from __future__ import annotations

import argparse
import sys

from harness.render.units import to_mib, to_ms


# ---- show -------------------------------------------------------------------------------------
def cmd_show(args: argparse.Namespace) -> int:
    # local: pandas is imported when the command runs, not at `attnbench --help`
    import pandas as pd  # lazy: start-up

    from harness.analysis.trust import parse_flag_filter  # lazy: start-up
    from harness.bench.heap import describe  # lazy: start-up
    from harness.render.repro import find_row, repro_command  # lazy: start-up
    from harness.store.load import load_run  # lazy: start-up

    wanted = parse_flag_filter(args.flagged) if args.flagged is not None else None
    df, meta = load_run(args.run_dir)
    if args.repro:
        print(repro_command(find_row(df, args.repro), meta))
        return 0
    prov = meta["provenance"]
    print(f"run {meta['run_id']} ({meta['status']}): {len(df)} rows on {prov['device']} ({prov['device_name']}), "
          f"torch {prov['torch_version']}, commit {str(prov['git_commit'])[:10]}{' (dirty)' if prov['git_dirty'] else ''}")
    print(trust_line(meta.get("trust"), meta))
    spent = time_line(meta)
    if spent:
        print(spent)
    for line in unavailable_lines(meta):
        print(line)
    if df.empty:
        return 0
    print(f"allocator: {describe(meta.get('allocator'))}")
    print_answer(df, meta, args.baseline)
    print_quality(df, meta)
    table = pd.crosstab(df["variant"], df["status"])
    print(table.to_string())
    ok = df[df["status"] == "ok"]
    if len(ok):
        cols = ["case_id", "variant", "pattern", "causal", "seq_len", "pass", "dtype"]
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


def time_line(meta: dict) -> str:
    """Where the run's time went: seconds per phase (run.json ``phases_s``), and within the cases' phase
    per step of measuring (``cost_s``); empty for a run that recorded neither."""
    phases = {k: v for k, v in (meta.get("phases_s") or {}).items() if v >= 0.05}
    if not phases:
        return ""
    cost = {k: v for k, v in sorted((meta.get("cost_s") or {}).items(), key=lambda kv: -kv[1]) if v >= 0.5}
    parts = [f"{name} {seconds:.0f} s" if seconds >= 1 else f"{name} {seconds:.1f} s" for name, seconds in phases.items()]
    steps = f"; measuring, by step: {', '.join(f'{k} {v:.0f} s' for k, v in cost.items())}" if cost else ""
    return f"time: {sum(phases.values()):.0f} s in all: " + ", ".join(parts) + steps


def unavailable_lines(meta: dict) -> list[str]:
    """One line per variant the run left out because it cannot run on the device at all."""
    from harness.render.answer import unavailable  # lazy: start-up

    return [f"not run: {u['text']}" for u in unavailable([meta])]


def print_answer(df, meta: dict, baseline: str | None) -> None:
    """The report's "which to use" table, as a rich table on stdout."""
    from rich import box  # lazy: start-up
    from rich.console import Console  # lazy: start-up
    from rich.markup import escape  # lazy: start-up
    from rich.table import Table  # lazy: start-up

    from harness.render.answer import answer_rows, answer_summary, fmt_pct, glance, glance_cols  # lazy: start-up
    from harness.render.context import resolve_baseline  # lazy: start-up
    from harness.render.prepare import prepare  # lazy: start-up
    from harness.render.units import fmt_num, fmt_sci  # lazy: start-up
    from harness.store.schema import LIST_COLUMNS  # lazy: start-up

    prep = prepare(df.drop(columns=list(LIST_COLUMNS), errors="ignore"))
    base, note = resolve_baseline(sorted(prep["variant"].unique()), baseline)
    choice = answer_rows(prep, base)
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, highlight=False)
    if note:
        console.print(escape(note))
    multi_shape = choice["shape"].nunique() > 1 if len(choice) else False
    inputs = "inputs" in choice.columns
    fidelity = "fidelity_out_rel_error" in choice.columns and bool(choice["fidelity_out_rel_error"].notna().any())
    view = glance(choice, False, multi_shape)
    if len(view):
        at = Table(title="Which to use, at a glance: the fastest trusted variant per case"
                         + (f" and its speedup over {base} (~: {base}'s time untrusted)" if base else ""),
                   title_justify="left", box=box.SIMPLE_HEAD)
        cols = glance_cols(view)
        for c in cols:
            at.add_column(escape(c.header), overflow="fold")
        for r in view.to_dict("records"):
            at.add_row(*[escape(c.fmt(r[c.key])) for c in cols])
        console.print(at)
    table = Table(title="Which to use, every case: the fastest trusted variant"
                        + (f" (speedup and memory saving vs {base})" if base else ""),
                  title_justify="left", box=box.SIMPLE_HEAD)
    for header, justify in ([("shape", "left")] if multi_shape else []) + ([("inputs", "left")] if inputs else []) + [
            ("pattern", "left"), ("causal", "left"), ("pass", "left"), ("N", "right"), ("use", "left"),
            ("time ms", "right"), ("speedup", "right"), ("mem saving", "right"),
            ("peak MiB", "right"), ("rel. error", "right")] + ([("error vs global %", "right")] if fidelity else []) + [
            ("note", "left")]:
        table.add_column(escape(header), justify=justify, overflow="fold")
    notes: dict[str, int] = {}  # a note's text -> its number: rows that share a note share its number
    for r in choice.to_dict("records"):
        mark = f"[{notes.setdefault(r['why'], len(notes) + 1)}]" if r["why"] else ""
        cells = ([r["shape"]] if multi_shape else []) + ([r["inputs"]] if inputs else [])
        cells += [r["pattern_label"], "yes" if r["causal"] else "no", r["pass"], str(r["seq_len"]), r["winner"],
                  fmt_num(r["time_ms"]), r["speedup_text"], r["saving_text"], fmt_num(r["peak_mem_mib"]),
                  fmt_sci(r["rel_error"]) if pd_notna(r["rel_error"]) else "",
                  *([fmt_pct(r["fidelity_out_rel_error"])] if fidelity else []), mark]
        table.add_row(*[escape(str(c)) for c in cells], style="bold" if r["winner"] != "none" else "dim")
    console.print(table)
    for text, number in notes.items():
        console.print(escape(f"[{number}] {text}"))
    for line in answer_summary(choice, base):
        console.print(escape(line))
    console.print("the command that measures one case again: attnbench show RUN --repro CASE_ID (case ids: --all)")


def print_quality(df, meta: dict) -> None:
    """The report's "cheapest within 1% / 5% / 10%" table (``harness.render.quality``), as a rich table
    on stdout, when the run's rows have fidelity columns; nothing otherwise."""
    from harness.analysis.frontier import has_fidelity  # lazy: start-up

    if not has_fidelity(df):
        return
    from rich import box  # lazy: start-up
    from rich.console import Console  # lazy: start-up
    from rich.markup import escape  # lazy: start-up
    from rich.table import Table  # lazy: start-up

    from harness.analysis.frontier import cheapest_within  # lazy: start-up
    from harness.render.quality import perplexities, within_long  # lazy: start-up

    view, cols = within_long(cheapest_within(df))
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, highlight=False)
    table = Table(title="Quality versus cost: the cheapest configuration within each output error of global "
                        "attention (a model's worst layer)", title_justify="left", box=box.SIMPLE_HEAD)
    for c in cols:
        table.add_column(escape(c.header), justify="right" if c.numeric else "left", overflow="fold",
                         no_wrap=c.key == "problem")  # the shape on one line; the numbers' headers wrap instead
    for r in view.to_dict("records"):
        table.add_row(*[escape(c.fmt(r.get(c.key))) for c in cols])
    console.print(table)
    for line in perplexities([meta]):
        console.print(escape(line))


def pd_notna(v) -> bool:
    return v is not None and v == v


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


def trust_line(trust: dict | None, meta: dict | None = None) -> str:
    """run.json's trust summary in one line, with the calibration drift of ``meta`` as evidence (runs
    written before trust flags: not assessed)."""
    from harness.render.verdict import drift_clause  # lazy: start-up

    drift = drift_clause(meta or {}, (trust or {}).get("flags", {}).get("slow machine"))
    if not trust or not trust.get("measured"):
        return ("trust: not assessed (a run written before trust flags, or nothing measured)"
                + (f"; {drift}" if drift else ""))
    from harness.render.trust_text import evidence_clauses  # lazy: start-up

    flags = ", ".join(f"{k} {v}" for k, v in sorted(trust.get("flags", {}).items(), key=lambda kv: -kv[1]))
    clauses = [*evidence_clauses(trust), *([drift] if drift else [])]
    return (f"trust: {trust['trusted']} of {trust['measured']} measured cells trusted, {trust['flagged']} flagged"
            + (f" ({flags})" if flags else "") + (f", {trust['not_assessed']} not assessed" if trust.get("not_assessed")
                                                  else "") + "".join(f"; {c}" for c in clauses))


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("show", help="print a run's answer and status table (and its measurements with --all)",
                       description="Summarize a run folder: provenance, the trust verdict, the variants that cannot "
                                   "run on its device, which variant to use per pattern, pass and length, a "
                                   "variant x status table, every oom, timeout, wrong or error cell with its reason, "
                                   "and with --all every measured row.")
    p.add_argument("run_dir", help="a run folder, e.g. results/<run-id>")
    p.add_argument("--all", action="store_true", help="also print every ok row (case id, median ms, peak MiB, error)")
    p.add_argument("--baseline", help="the variant speedups and memory savings are over (default: naive, or the "
                                      "first variant of the run)")
    p.add_argument("--repro", metavar="CASE_ID", help="print only the command that measures this case again on its "
                                                      "own (case ids: --all, or the report's tidy table)")
    p.add_argument("--flagged", nargs="?", const="", metavar="FLAGS",
                   help="also print every flagged (untrusted) cell with its flags; FLAGS: comma-separated flag "
                        "names to keep (few calls, noisy, bimodal, host busy, slow machine, above ceiling, page faults, "
                        "throttled, unreproduced, drop, ...)")
    p.set_defaults(func=cmd_show)
