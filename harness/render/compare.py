"""Display of a comparison (``harness.analysis.compare.compare_runs``'s frame): a table with a
headline, calibration line and footnotes, as plain text, GitHub Markdown (whose table `attnbench ci`
shows too, ``harness.render.gate``), a self-contained HTML fragment or JSON. Units are chosen here,
through ``harness.render.units``; the frame itself stays in seconds, bytes and ratios.
"""

from __future__ import annotations

import html
import json

import pandas as pd

from harness.analysis.compare import FAILING, VERDICTS, summarize
from harness.analysis.stats import DEFAULT_CONFIDENCE, DEFAULT_THRESHOLD
from harness.render.units import fmt_ci, fmt_ratio, fmt_time, to_pct

FORMATS = ("text", "markdown", "html", "json")


def _order(result: pd.DataFrame) -> pd.DataFrame:
    rank = {v: i for i, v in enumerate(VERDICTS)}
    return result.assign(_r=result["verdict"].map(rank)).sort_values(["_r", "case_id"], kind="stable")


def _table(result: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["case", "base", "new", "raw ratio", "ratio (norm.)", f"{_conf(result)} CI (norm.)", "mem ratio",
              "verdict"]
    rows = []
    for r in _order(result).to_dict("records"):
        verdict = r["verdict"]
        if verdict == "not run" and "wrong" not in (r["base_status"], r["new_status"]):
            continue
        if verdict == "accepted":
            verdict += f" ({r['reason']})"
        elif verdict in ("wrong", "broken", "fixed", "not run") and not r["base_status"] == r["new_status"] == "ok":
            verdict += f" ({r['base_status'] or '-'} -> {r['new_status'] or '-'}" + (
                f": {r['reason']})" if r["reason"] else ")")
        elif verdict in ("wrong", "untrusted") and r["reason"]:
            verdict += f" ({r['reason']})"
        if r.get("mem_verdict") == "more":
            verdict += "; MORE MEMORY"
        if r.get("error_verdict") == "worse":
            new_err = r.get("new_rel_error")
            verdict += f"; LESS ACCURATE (error {new_err:.1e})" if new_err == new_err and new_err is not None \
                else "; LESS ACCURATE"
        if r.get("fidelity_verdict") in ("worse", "missing"):
            new_f = r.get("new_fidelity")
            verdict += ("; LESS FAITHFUL (fidelity missing)" if new_f is None or new_f != new_f else
                        f"; LESS FAITHFUL (fidelity {r.get('base_fidelity'):.3g} -> {new_f:.3g})")
        rows.append([r["case_id"], fmt_time(r["base_time_s_median"]), fmt_time(r["new_time_s_median"]),
                     fmt_ratio(r["time_ratio_raw"]), fmt_ratio(r["time_ratio"]),
                     fmt_ci(r["time_ratio_lo"], r["time_ratio_hi"]), fmt_ratio(r["mem_ratio"]), verdict])
    if result["mem_ratio"].isna().all():  # not measured (attnbench ci): no column of dashes
        header.pop(6)
        rows = [row[:6] + row[7:] for row in rows]
    return header, rows


def _conf(result: pd.DataFrame) -> str:
    return f"{to_pct(result.attrs.get('confidence', DEFAULT_CONFIDENCE)):g}%"


def _headline(result: pd.DataFrame, base_name: str, new_name: str) -> str:
    s = summarize(result)
    counts = ", ".join(f"{n} {v}" for v, n in s["counts"].items() if n)
    thr = result.attrs.get("threshold", DEFAULT_THRESHOLD)
    return (f"{new_name} vs {base_name}: {s['compared']} cases compared ({counts or 'none'}); "
            f"threshold {thr:g}x at {_conf(result)} confidence")


def _calibration_line(result: pd.DataFrame) -> str:
    a = result.attrs
    if not a.get("calibration_ratio"):
        return "calibration: unavailable in one run, so normalized ratios equal raw ratios"
    line = (f"calibration (matmul_f32_512): base {fmt_time(a['base_calibration_s'])}, new "
            f"{fmt_time(a['new_calibration_s'])}, new/base {a['calibration_ratio']:.3f}; "
            "verdicts use time ratios divided by it")
    moved = [f"{side} {to_pct(a[f'{side}_calibration_spread'] - 1):.0f}%" for side in ("base", "new")
             if (a.get(f"{side}_calibration_spread") or 1.0) > 1.10]
    if moved:
        line += (f". Warning: machine speed moved during a run (calibration max/min: {', '.join(moved)}); "
                 "its ratios carry that load, not only code changes")
    if (a.get("drift_factor") or 1.0) > 1.0:
        line += f"; normalized intervals are widened by that drift (x{a['drift_factor']:.2f})"
    return line


def _footnotes(result: pd.DataFrame) -> list[str]:
    notes = []
    not_run = result["verdict"] == "not run"
    hidden = int((not_run & (result["base_status"] != "wrong") & (result["new_status"] != "wrong")).sum())
    if hidden:
        notes.append(f"{hidden} case(s) ok in neither run (unsupported, for instance) are not listed; "
                     "--format json lists them")
    wrong = int((result["verdict"] == "wrong").sum())
    if wrong:
        notes.append(f"{wrong} case(s) wrong in NEW: their output is not what the pattern defines, so their time "
                     "is shown but not judged, and they fail the comparison")
    if result.attrs.get("noisy_rows"):
        notes.append(f"{result.attrs['noisy_rows']} measurement(s) flagged noisy (IQR/median > 10%) in their run")
    return notes


def render_text(result: pd.DataFrame, base_name: str = "BASE", new_name: str = "NEW") -> str:
    header, rows = _table(result)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [_headline(result, base_name, new_name), _calibration_line(result), "", line(header),
           line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    notes = _footnotes(result)
    return "\n".join(out + ([""] + notes if notes else [])) + "\n"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(result: pd.DataFrame) -> str:
    """The comparison table alone, in GitHub-flavoured Markdown (failing verdicts in bold)."""
    header, rows = _table(result)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|"]
    for r in rows:
        cells = [f"`{_md_cell(r[0])}`", *map(_md_cell, r[1:-1]), f"**{_md_cell(r[-1])}**"
                 if r[-1].split(" ")[0] in FAILING else _md_cell(r[-1])]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def render_markdown(result: pd.DataFrame, base_name: str = "BASE", new_name: str = "NEW") -> str:
    """A GitHub-flavoured Markdown section, fit for $GITHUB_STEP_SUMMARY."""
    s = summarize(result)
    icon = {0: "no regression", 1: "REGRESSION", 2: "nothing compared"}[s["exit_code"]]
    notes = [_md_cell(n) + "  " for n in _footnotes(result)]
    return "\n".join([f"### attnbench compare: {icon}", "", _md_cell(_headline(result, base_name, new_name)), "",
                      _md_cell(_calibration_line(result)), "", markdown_table(result), *notes]) + ("\n" if notes else "")


_HTML_STYLE = (".attnbench-compare table{border-collapse:collapse;font:13px sans-serif}"
               ".attnbench-compare th,.attnbench-compare td{border:1px solid #ccc;padding:2px 6px}"
               ".attnbench-compare td.num{text-align:right;font-variant-numeric:tabular-nums}"
               ".attnbench-compare .slower,.attnbench-compare .broken,.attnbench-compare .wrong{background:#fdd}"
               ".attnbench-compare .faster{background:#dfd}")


def render_html(result: pd.DataFrame, base_name: str = "BASE", new_name: str = "NEW") -> str:
    """A self-contained HTML fragment (its own scoped style, no scripts, every text escaped)."""
    esc = html.escape
    header, rows = _table(result)
    parts = ['<div class="attnbench-compare">', f"<style>{_HTML_STYLE}</style>",
             f"<p>{esc(_headline(result, base_name, new_name))}</p>", f"<p>{esc(_calibration_line(result))}</p>",
             "<table>", "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for r in rows:
        cls = esc(r[-1].split(" ")[0], quote=True)
        cells = [f"<td><code>{esc(r[0])}</code></td>"] + [f'<td class="num">{esc(c)}</td>' for c in r[1:-1]]
        cells.append(f"<td>{esc(r[-1])}</td>")
        parts.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>")
    parts += ["</tbody>", "</table>", *[f"<p>{esc(n)}</p>" for n in _footnotes(result)], "</div>"]
    return "\n".join(parts) + "\n"


def render_json(result: pd.DataFrame, base_name: str = "BASE", new_name: str = "NEW") -> str:
    records = json.loads(result.to_json(orient="records"))  # NaN/NA -> null
    return json.dumps({"base": base_name, "new": new_name, **{k: v for k, v in result.attrs.items()},
                       "summary": summarize(result), "cases": records}, indent=2) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown, "html": render_html, "json": render_json}
