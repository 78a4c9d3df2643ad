"""`attnbench ci`'s Markdown verdict: a title, the lines that say what was measured and how it was
judged, what regressed or was accepted, then the comparison table (``harness.render.compare``)."""

from __future__ import annotations

import pandas as pd

from harness.analysis.compare import summarize
from harness.render.compare import markdown_table
from harness.render.units import to_pct


def gate_lines(result: pd.DataFrame, info: dict) -> list[str]:
    """The explanatory lines above the table. ``info``: the gate's record (``harness.gate.run``: refs,
    tree, wall time, processes, threads, clock, threshold, confidence, the cases re-measured)."""
    failing = summarize(result)["failing"]
    accepted = result.loc[result["verdict"] == "accepted", "case_id"].tolist()
    lines = [f"base `{info['base_commit'][:10]}` ({info['base_ref']}) vs `{info['tree']}` (HEAD `{info['head']}`"
             f"{', uncommitted changes' if info['dirty'] else ''}), same machine, same job, {info['wall_s']:.0f} s",
             f"{len(result)} cases; {info['processes']} fresh processes per side, run in pairs, every case measured "
             f"in blocks A B B A (B A A B in odd pairs); {info['threads']} thread(s), {info['clock']} time; each "
             "process times the calibration kernel beside every case",
             f"slower = {to_pct(info['confidence']):g}% bootstrap CI (over pairs) lower bound of new/base above "
             f"{info['threshold']:g}, where new/base is the median over process pairs of the pair's ratio of "
             "calibration-normalized medians; more memory = peak above base by 5% and 64 KiB; less accurate = error "
             "above the dtype's tolerance or 10x base's; wrong = ok at base, but the new output is wrong (error "
             "non-finite, missing or above the dtype's tolerance), whatever its time"]
    if info["rechecked"]:
        lines.append(f"re-measured {len(info['rechecked'])} flagged case(s) in {info['recheck_processes']} fresh "
                     "process pairs, judged on those pairs alone (the first round's figures are in the reason)")
    if failing:
        lines.append(f"**regressed: {', '.join(f'`{c}`' for c in failing)}**; to accept an intentional slowdown, "
                     "put `[accept-regression: <case-id substring or all>]` in the commit message (it accepts no "
                     "wrong or broken case)")
    if accepted:
        lines.append(f"accepted by commit marker: {', '.join(f'`{c}`' for c in accepted)}")
    return lines


def gate_markdown(result: pd.DataFrame, info: dict) -> str:
    """The whole verdict: ``### attnbench ci: <info's title>``, ``gate_lines``, the table."""
    return "\n".join([f"### attnbench ci: {info['title']}", "", *[f"{x}  " for x in gate_lines(result, info)], "",
                      markdown_table(result)])
