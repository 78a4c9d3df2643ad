""""Which to use", in report units: per pattern (causal flag, pass) and length, the fastest trusted
variant of ``harness.analysis.choose.which_to_use`` with its time in ms, its speedup and memory saving
over the baseline as "x" ratios, its peak memory in MiB and its relative error (and, where rows have
fidelity columns, its output error against global attention and its perplexity), plus the command that
measures it again; and the variants that cannot run on a run's device at all (run.json's
``unavailable``), said once each with their reasons. The report (``answer_table``) and
``attnbench show`` (``answer_rows``) read the same rows. Pure functions.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.analysis.choose import finite_positive, geometric_mean, which_to_use, wins
from harness.render.prepare import GROUP_KEYS, PASS_ORDER, pattern_rank
from harness.render.repro import repro_command
from harness.render.tables import Col, html_table
from harness.render.units import fmt_bool, fmt_num, fmt_sci, fmt_text, to_mib, to_ms, to_pct

KEYS = [*GROUP_KEYS, "seq_len"]

# The winner's fidelity against exact global attention (``harness.analysis.frontier``), where rows have it.
FIDELITY_SHOWN = ("fidelity_out_rel_error", "fidelity_ppl")


def _keys(prep: pd.DataFrame) -> list[str]:
    """``KEYS``, and the input source where a frame holds several (random and a model's are other cases)."""
    return [*KEYS, "inputs"] if "inputs" in prep.columns and prep["inputs"].nunique(dropna=False) > 1 else KEYS


def fmt_ratio(v) -> str:
    """A speedup or saving as "3.2x" (three significant figures), "" when missing."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{float(v):.3g}x"


def fmt_pct(v) -> str:
    """A fraction as a percentage with three significant figures ("1.23" for 0.0123), "" when missing."""
    return "" if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)) else fmt_num(to_pct(v))


def choose(prep: pd.DataFrame, baseline: str | None) -> pd.DataFrame:
    """The answer per (series, shape, pattern, causal, pass, N) of a prepared frame, in base units,
    in reading order (pattern, then pass, causal and N)."""
    choice = which_to_use(prep, baseline, _keys(prep))
    if choice.empty:
        return choice
    order = choice.assign(_p=[pattern_rank(p) for p in choice["pattern_label"]],
                          _pass=[PASS_ORDER.index(p) if p in PASS_ORDER else 9 for p in choice["pass"]])
    return order.sort_values(["series", "shape", "_p", "pattern_label", "_pass", "causal", "seq_len"],
                             kind="stable").drop(columns=["_p", "_pass"]).reset_index(drop=True)


def answer_rows(prep: pd.DataFrame, baseline: str | None, metas: dict | None = None) -> pd.DataFrame:
    """``choose`` with the report-unit columns both displays read: ``time_ms``, ``peak_mem_mib``,
    ``baseline_time_ms``, ``speedup_text``, ``saving_text``, ``error_text``, ``winner`` (the variant, or
    "none" and the note's reason), ``why`` (the note, the untrusted variants measured faster and the
    ones left out) and ``repro`` (the command measuring the winner's cell again; ``metas``: run.json
    per run id, for the run's budget)."""
    choice = choose(prep, baseline)
    if choice.empty:
        return choice.assign(time_ms=[], peak_mem_mib=[], baseline_time_ms=[], speedup_text=[], saving_text=[],
                             error_text=[], winner=[], why=[], repro=[])
    choice["time_ms"] = to_ms(choice["time_s_median"])
    choice["peak_mem_mib"] = to_mib(choice["peak_mem_bytes"])
    choice["baseline_time_ms"] = to_ms(choice["baseline_time_s_median"])
    choice["speedup_text"] = [fmt_ratio(v) for v in choice["speedup"]]
    choice["saving_text"] = [fmt_ratio(v) for v in choice["memory_saving"]]
    choice["error_text"] = [fmt_sci(v) if pd.notna(v) else "" for v in choice["rel_error"]]
    choice["winner"] = [v if isinstance(v, str) and v else "none" for v in choice["variant"]]
    why = []
    for r in choice.to_dict("records"):
        parts = [r["note"]] if r["note"] else []
        left_out = r["left_out"]
        if r["faster_untrusted"]:  # the untrusted ones that matter; the wrong ones still said
            parts.append(f"measured faster but untrusted: {r['faster_untrusted']}")
            left_out = f"wrong: {r['wrong']}" if r["wrong"] else ""
        if left_out:
            parts.append(f"left out ({left_out})")
        why.append("; ".join(parts))
    choice["why"] = why
    choice = with_fidelity(choice, prep)
    cells = {(str(r["series"]), str(r["case_id"])): r for r in prep.to_dict("records")} \
        if "case_id" in prep.columns else {}
    metas = metas or {}
    choice["repro"] = [repro_command(cells[(s, str(c))], metas.get(cells[(s, str(c))]["run_id"]))
                       if (s, str(c)) in cells else "" for s, c in zip(choice["series"], choice["case_id"])]
    return choice


def with_fidelity(choice: pd.DataFrame, prep: pd.DataFrame) -> pd.DataFrame:
    """``choice`` with the winner's ``fidelity_out_rel_error`` (its worst layer where its case has rows
    for several) and ``fidelity_ppl``, from the winner's ok rows of ``prep``; global attention's error
    is 0 by definition. Frames without the columns are returned as they are."""
    cols = [c for c in FIDELITY_SHOWN if c in prep.columns]
    if not cols or choice.empty:
        return choice
    keys = [k for k in _keys(prep) if k in choice.columns]
    ok = prep.loc[prep["status"] == "ok", [*keys, "variant", *cols]].copy()
    for col in cols:
        ok[col] = pd.to_numeric(ok[col], errors="coerce").astype("float64")
    worst = ok.groupby([*keys, "variant"], sort=False, dropna=False)[cols].max().reset_index()
    out = choice.drop(columns=cols, errors="ignore").merge(worst, how="left", on=[*keys, "variant"])
    if "fidelity_out_rel_error" in out.columns:
        is_global = (out["pattern"] == "global") & out["variant"].notna()
        out.loc[is_global, "fidelity_out_rel_error"] = out.loc[is_global, "fidelity_out_rel_error"].fillna(0.0)
    return out


def mark_suspicious(choice: pd.DataFrame, suspicious: pd.DataFrame) -> pd.DataFrame:
    """``choice`` with a clause added to ``why`` where the winner is a suspicious speedup (a row of
    ``harness.render.suspicious.suspicious_table``: far faster than the best other variant)."""
    if choice.empty or suspicious.empty:
        return choice
    keys = [k for k in (*KEYS, "variant") if k in suspicious.columns and k in choice.columns]
    ratios = {tuple(r[k] for k in keys): r["ratio"] for r in suspicious.to_dict("records")}
    why = []
    for r in choice.to_dict("records"):
        ratio = ratios.get(tuple(r[k] for k in keys))
        clause = f"suspicious: {fmt_ratio(ratio)} faster than the best other variant, check it" if ratio else ""
        why.append("; ".join(p for p in (clause, r["why"]) if p))
    return choice.assign(why=why)


def answer_summary(choice: pd.DataFrame, baseline: str | None) -> list[str]:
    """A few sentences over every answer: which variants win how many cases, the geometric-mean speedup
    of the winners over the baseline where the baseline's time is trusted too (the others counted, left
    out), their geometric-mean memory saving wherever both ran, and the cases with no trusted winner."""
    if choice.empty:
        return []
    won = wins(choice)
    total = len(choice)
    lines = ["Fastest trusted variant: " + ", ".join(f"{v} in {n} of {total} cases" for v, n in won.items())
             if len(won) else "No case has a trusted winner."]
    base_untrusted = np.array([v is False for v in choice["baseline_trusted"]], dtype=bool)  # None: not assessed
    speeds = finite_positive(choice.loc[~base_untrusted, "speedup"])
    left_out = len(finite_positive(choice.loc[base_untrusted, "speedup"]))
    savings = finite_positive(choice["memory_saving"])  # peak memory does not depend on a quiet machine
    if baseline and (len(speeds) or len(savings)):
        cases = f"{len(speeds)} case{'' if len(speeds) == 1 else 's'}"
        faster = (f"{fmt_ratio(geometric_mean(speeds))} faster over the {cases} where both times are trusted"
                  if len(speeds) else "no speedup with both times trusted")
        if left_out:
            faster += f" ({left_out} more left out: {baseline}'s time untrusted)"
        lines.append(f"Against {baseline} (geometric means): {faster}; {fmt_ratio(geometric_mean(savings)) or 'n/a'} "
                     f"less peak memory over the {len(savings)} case{'' if len(savings) == 1 else 's'} where both ran")
    none = int((choice["winner"] == "none").sum()) if "winner" in choice.columns else int(choice["variant"].isna().sum())
    if none:
        lines.append(f"{none} case{'' if none == 1 else 's'} with no trusted winner (the notes say why)")
    return lines


def answer_table(choice: pd.DataFrame, baseline: str | None, multi_series: bool, multi_shape: bool):
    """The "Which to use" table of the report (an HTML fragment)."""
    cols = [*([Col("series", "run")] if multi_series else []), *([Col("shape", "shape")] if multi_shape else []),
            *([Col("inputs", "inputs")] if "inputs" in choice.columns else []), Col("pattern_label", "pattern"),
            Col("causal", "causal", fmt_bool), Col("pass", "pass"),
            Col("seq_len", "N", fmt_text, True), Col("winner", "use"),
            Col("time_ms", "time (ms)", fmt_num, True),
            Col("speedup", f"speedup over {baseline}" if baseline else "speedup", fmt_ratio, True),
            Col("memory_saving", f"memory saving vs {baseline}" if baseline else "memory saving", fmt_ratio, True),
            Col("peak_mem_mib", "peak (MiB)", fmt_num, True),
            Col("rel_error", "rel. error vs float64", fmt_sci, True)]
    if "fidelity" in choice.columns and choice["fidelity"].notna().any():
        cols.append(Col("fidelity", "fidelity", fmt_num, True))
    if "fidelity_out_rel_error" in choice.columns and choice["fidelity_out_rel_error"].notna().any():
        cols.append(Col("fidelity_out_rel_error", "output error vs global (%)", fmt_pct, True))
    if "fidelity_ppl" in choice.columns and choice["fidelity_ppl"].notna().any():
        cols.append(Col("fidelity_ppl", "perplexity", fmt_num, True))
    cols += [Col("why", "note"), Col("repro", "measure it again")]
    return html_table(choice, cols, table_id="which-to-use")


def glance(choice: pd.DataFrame, multi_series: bool, multi_shape: bool) -> pd.DataFrame:
    """"Which to use" at a glance: one row per pattern (causal flag, pass; and run, shape and inputs
    where there are several), one column per N (``N=512``, ...), each cell the winner and its speedup
    over the baseline ("chunked 1.23x"; "chunked ~1.23x" where the baseline's time is untrusted, so the
    speedup is too; "none" without a trusted winner). Reading order of ``choice``."""
    if choice.empty:
        return pd.DataFrame()
    keys = [*(["series"] if multi_series else []), *(["shape"] if multi_shape else []),
            *(["inputs"] if "inputs" in choice.columns else []), "pattern_label", "causal", "pass"]
    cell = [("none" if w == "none" else f"{w} {'~' if b is False and s else ''}{s}".strip())
            for w, s, b in zip(choice["winner"], choice["speedup_text"], choice["baseline_trusted"])]
    ns = sorted({int(n) for n in choice["seq_len"]})
    rows: dict[tuple, dict] = {}
    for key, n, text in zip(zip(*(choice[k] for k in keys)), choice["seq_len"], cell):
        rows.setdefault(key, dict(zip(keys, key)))[f"N={int(n)}"] = text
    return pd.DataFrame(list(rows.values()), columns=[*keys, *(f"N={n}" for n in ns)]).fillna("")


def glance_cols(view: pd.DataFrame) -> list[Col]:
    """The columns of a ``glance`` frame, as the report and `attnbench show` head and format them."""
    labels = {"series": "run", "pattern_label": "pattern"}
    return [Col(c, labels.get(c, c), fmt_bool if c == "causal" else fmt_text) for c in view.columns]


def glance_table(choice: pd.DataFrame, multi_series: bool, multi_shape: bool):
    """``glance`` as the report's HTML fragment."""
    view = glance(choice, multi_series, multi_shape)
    return html_table(view, glance_cols(view), table_id="at-a-glance") if len(view) else ""


def unavailable(metas: list[dict]) -> list[dict]:
    """The variants each run left out because they cannot run on its device at all (run.json's
    ``unavailable``: {variant: [reasons]}), one entry per run and variant: {"run_id", "variant",
    "reasons", "text"}. Runs without the key give none."""
    out = []
    for meta in metas:
        left = meta.get("unavailable") or {}
        if not isinstance(left, dict):
            continue
        device = (meta.get("sweep") or {}).get("device") or (meta.get("provenance") or {}).get("device") or "this device"
        for variant in sorted(left):
            reasons = left[variant]
            reasons = [str(r) for r in (reasons if isinstance(reasons, (list, tuple)) else [reasons]) if str(r)]
            out.append({"run_id": str(meta.get("run_id") or ""), "variant": str(variant), "reasons": reasons,
                        "text": f"{variant} cannot run on {device}: " + ("; ".join(reasons) or "no reason given")})
    return out
