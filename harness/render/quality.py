"""The report's "Quality versus cost" section, in report units (ms, MiB, %): what each pattern
configuration gives up against exact global attention (``harness.analysis.frontier``) against what
it costs. Per input source, one figure: output error and softmax mass dropped against time and
against peak memory (log x), every configuration a labelled point, the Pareto frontier a dashed step
line through its (black-edged) points, global attention a black star; and the "cheapest within 1% /
5% / 10%" table with the input sources side by side, overall (a model's worst layer) and per layer,
shared by the report and ``attnbench show``. Pure functions: frames in, a Figure or an escaped HTML
fragment out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis.frontier import (
    GLOBAL,
    PROBLEM_KEYS,
    THRESHOLDS,
    cheapest_within,
    configurations,
    has_fidelity,
    over_layers,
    pareto,
)
from harness.render.answer import fmt_ratio
from harness.render.figures import _empty_figure, _new_figure, _style, figure_img, variant_palette
from harness.render.tables import Col, html_table
from harness.render.units import fmt_num, fmt_text, to_mib, to_ms, to_pct

# A configuration's parameters and their letters, as the report's pattern labels write them.
PARAM_TAGS = (("window", "w"), ("segment", "s"), ("sinks", "s"), ("stride", "d"), ("globals", "g"), ("topk", "k"))
PANELS = (("fidelity_out_rel_error", "output error vs global (%)", "time_s_median"),
          ("fidelity_out_rel_error", "output error vs global (%)", "peak_mem_bytes"),
          ("fidelity_mass_dropped", "softmax mass dropped (%)", "time_s_median"),
          ("fidelity_mass_dropped", "softmax mass dropped (%)", "peak_mem_bytes"))
X_AXES = {"time_s_median": ("time (ms, fastest trusted variant)", to_ms),
          "peak_mem_bytes": ("peak memory (MiB)", to_mib)}
MAX_PROBLEMS = 4  # rows of panels per figure (the longest sequences); the table lists every problem
# The "cheapest within" table's fields per input source: (key, header, formatter, numeric).
FIELDS = (("use", "use", fmt_text, False), ("variant_text", "variant", fmt_text, False),
          ("error_pct", "output error (%)", fmt_num, True), ("time_ms", "time (ms)", fmt_num, True),
          ("speedup", "speedup over global", fmt_ratio, True), ("peak_mib", "peak (MiB)", fmt_num, True),
          ("mass_pct", "mass dropped (%)", fmt_num, True), ("fidelity_ppl", "perplexity", fmt_num, True))


def _present(v) -> bool:
    return v is not None and not (isinstance(v, (float, np.floating)) and np.isnan(v)) and not pd.isna(v)


def config_label(rec) -> str:
    """A configuration as the report names it: "local (w=128)", "sink (w=128, s=4)", "global"."""
    params = [f"{tag}={int(rec[col])}" for col, tag in PARAM_TAGS if _present(rec.get(col))]
    return str(rec.get("pattern") or "") + (f" ({', '.join(params)})" if params else "")


def _problem_keys(df: pd.DataFrame) -> list[str]:
    return [k for k in PROBLEM_KEYS if k in df.columns and k not in ("inputs", "inputs_layer")]


def problem_label(rec, varying=()) -> str:
    """"N=1024, fwd, causal, B=1 H=4 D=64" (q_len and kv heads where they differ; run, device and
    dtype where ``varying`` names them)."""
    n, q = rec.get("seq_len"), rec.get("q_len")
    parts = [f"N={n}" + (f" q_len={q}" if _present(q) and q != n else ""), str(rec.get("pass", "")),
             *(["causal"] if rec.get("causal") else [])]
    kvh = rec.get("kv_heads")
    parts.append(f"B={rec.get('batch')} H={rec.get('heads')}" + (f" Hkv={kvh}" if _present(kvh) and kvh != rec.get(
        "heads") else "") + f" D={rec.get('head_dim')}")
    return ", ".join([*(str(rec[k]) for k in varying if k in rec), *parts])


def _longest(problems: list[pd.DataFrame], k: int) -> list[pd.DataFrame]:
    """The ``k`` problems with the longest key sequences (kv_len, else seq_len), in their given order."""
    def length(g: pd.DataFrame) -> float:
        lens = g["kv_len"] if "kv_len" in g and g["kv_len"].notna().any() else g["seq_len"]
        return float(pd.to_numeric(lens, errors="coerce").max())
    keep = sorted(range(len(problems)), key=lambda i: -length(problems[i]))[:k]
    return [problems[i] for i in sorted(keep)]


def _sources(df: pd.DataFrame) -> list[str]:
    """Input sources in reading order: random first, then the others by name."""
    return sorted(df["inputs"].astype(str).unique(), key=lambda s: (s != "random", s))


def plot_quality(confs: pd.DataFrame, title: str, varying=()):
    """One input source's configurations (``over_layers``: a model's worst layer), one row of panels
    per problem (shape, pass, causal flag): output error and mass dropped (%) against time (ms) and
    peak memory (MiB), log x; the Pareto frontier of each panel as a dashed step line, its points with
    a black edge; global a black star; an untrusted time drawn hollow on the time panels."""
    import matplotlib  # lazy: start-up
    import matplotlib.ticker  # lazy: start-up
    from matplotlib.lines import Line2D  # lazy: start-up

    if confs.empty:
        return _empty_figure(f"{title}: no configuration ran ok")
    keys = _problem_keys(confs)
    problems = [g for _, g in confs.groupby(keys, sort=True, dropna=False)] if keys else [confs]
    shown = _longest(problems, MAX_PROBLEMS)
    palette = variant_palette(p for p in confs["pattern"].astype(str) if p != GLOBAL)
    untrusted_drawn = False
    with matplotlib.rc_context(_style()):
        fig, axes = _new_figure(len(shown), len(PANELS), 3.5, 3.0, extra_w=1.8)
        for i, g in enumerate(shown):
            recs = g.to_dict("records")
            label = problem_label(recs[0], varying)
            for j, (y, ylabel, x) in enumerate(PANELS):
                ax = axes[i][j]
                xlabel, unit = X_AXES[x]
                xs = unit(pd.to_numeric(g[x], errors="coerce").astype("float64").to_numpy())
                ys = to_pct(pd.to_numeric(g[y], errors="coerce").astype("float64").to_numpy()) if y in g.columns \
                    else np.full(len(g), np.nan)
                valid = np.isfinite(xs) & np.isfinite(ys) & (xs > 0)
                ax.set_title(label, fontsize=8)
                ax.set_xlabel(xlabel if i == len(shown) - 1 else "")
                ax.set_ylabel(ylabel if j in (0, 2) else "")
                if not valid.any():
                    ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="0.4")
                    continue
                front = pareto(pd.DataFrame({"x": xs, "y": ys}), "x", "y", by=()).to_numpy() & valid
                order = sorted(np.flatnonzero(front), key=lambda k: (xs[k], ys[k]))
                ax.step(xs[order], ys[order], where="post", color="0.2", linestyle="--", linewidth=1, zorder=1)
                for k in np.flatnonzero(valid):
                    r = recs[k]
                    is_global = str(r["pattern"]) == GLOBAL
                    color = "black" if is_global else palette[str(r["pattern"])]
                    hollow = x == "time_s_median" and r.get("time_trusted") is False
                    untrusted_drawn |= hollow
                    ax.plot([xs[k]], [ys[k]], linestyle="none", marker="*" if is_global else "o",
                            markersize=13 if is_global else 7 if front[k] else 5, color=color,
                            markerfacecolor="none" if hollow else color, alpha=1.0 if front[k] else 0.55,
                            markeredgecolor=color if hollow or not front[k] else "black",
                            markeredgewidth=1.6 if hollow else 1.0, zorder=3)
                    ax.annotate(config_label(r).replace("$", r"\$"), (xs[k], ys[k]), xytext=(4, 3),
                                textcoords="offset points", fontsize=6.5, color="0.15")
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.set_ylim(bottom=min(0.0, float(np.nanmin(ys[valid]))) - 0.5)
        handles = [Line2D([], [], linestyle="none", marker="*", markersize=12, color="black",
                          label="global (reference, exact)")]
        handles += [Line2D([], [], linestyle="none", marker="o", color=c, label=p.replace("$", r"\$"))
                    for p, c in palette.items()]
        handles.append(Line2D([], [], color="0.2", linestyle="--", marker="o", markeredgecolor="black",
                              markerfacecolor="0.6", label="Pareto frontier"))
        if untrusted_drawn:
            handles.append(Line2D([], [], linestyle="none", marker="o", color="0.3", markerfacecolor="none",
                                  label="hollow: untrusted time"))
        fig.legend(handles=handles, loc="outside right upper", title="pattern", frameon=False)
        more = f" (the {MAX_PROBLEMS} longest of {len(problems)} shapes; the table lists all)" \
            if len(problems) > len(shown) else ""
        fig.suptitle(title.replace("$", r"\$") + more)
    return fig


def _display(cheap: pd.DataFrame, varying) -> pd.DataFrame:
    """``cheapest_within`` rows with their display fields (``FIELDS``) and row keys."""
    out = cheap.copy()
    recs = out.to_dict("records")
    out["problem"] = [problem_label(r, varying) for r in recs]
    out["use"] = [config_label(r) if r["met"] else "none meets it" for r in recs]
    out["variant_text"] = [("" if not r["met"] else str(r["variant"]) + (" (time untrusted)" if r["time_trusted"]
                                                                         is False else "")) for r in recs]
    out["error_pct"] = to_pct(out["fidelity_out_rel_error"])
    out["time_ms"] = to_ms(out["time_s_median"])
    out["peak_mib"] = to_mib(out["peak_mem_bytes"])
    out["mass_pct"] = to_pct(out["fidelity_mass_dropped"])
    out["within"] = [f"{to_pct(t):g}%" for t in out["threshold"]]
    return out


def within_view(cheap: pd.DataFrame, per_layer: bool = False, varying=()) -> tuple[pd.DataFrame, list[Col]]:
    """The "cheapest within" table with the input sources side by side: (rows, columns). Overall: one
    row per problem and threshold, a layered source's answer judged on its worst layer. ``per_layer``:
    one row per layer as well, the unlayered sources' (random) answer repeated on each for comparison."""
    disp = _display(cheap, varying)
    sources = _sources(disp) if len(disp) else []
    layered = {s for s in sources if disp.loc[disp["inputs"] == s, "inputs_layer"].notna().any()}
    layers = sorted({int(v) for v in disp["inputs_layer"].dropna()}) if per_layer else [None]
    rows = []
    for (problem, t), g in disp.groupby(["problem", "threshold"], sort=False):
        for layer in layers:
            row = {"problem": problem, "within": g["within"].iloc[0], "layer": "all" if layer is None else layer}
            for k, s in enumerate(sources):
                sub = g[g["inputs"] == s]
                if s not in layered:
                    sub = sub[sub["inputs_layer"].isna()]
                elif layer is None:
                    sub = sub[sub["all_layers"]]
                else:
                    sub = sub[sub["inputs_layer"] == layer]
                rec = sub.iloc[0].to_dict() if len(sub) else {}
                row.update({f"{k}:{key}": rec.get(key) for key, *_ in FIELDS})
            rows.append(row)
    view = pd.DataFrame(rows)
    cols = [Col("problem", "shape"), Col("within", "within"),
            *([Col("layer", "layer", fmt_text, True)] if per_layer else [])]
    for k, s in enumerate(sources):
        for key, header, fmt, numeric in FIELDS:
            column = disp.loc[disp["inputs"] == s, key] if key in disp.columns else pd.Series(dtype=float)
            if numeric and not pd.to_numeric(column, errors="coerce").notna().any():
                continue  # e.g. perplexity on random inputs
            name = f"{s} (worst layer)" if s in layered and not per_layer else s
            cols.append(Col(f"{k}:{key}", f"{name}: {header}", fmt, numeric))
    return view, cols


def within_long(cheap: pd.DataFrame, varying=()) -> tuple[pd.DataFrame, list[Col]]:
    """The overall "cheapest within" rows, one per problem, threshold and input source (sources one
    under the other): the terminal's form of ``within_view``."""
    disp = _display(cheap, varying)
    if len(disp):
        disp = disp[disp["all_layers"] | disp["inputs_layer"].isna()]
        rank = {s: k for k, s in enumerate(_sources(disp))}
        disp = disp.assign(_rank=disp["inputs"].map(rank)).sort_values(["problem", "threshold", "_rank"], kind="stable")
        disp["inputs_text"] = [s + (f" (worst of {n} layers)" if n > 1 else "")
                               for s, n in zip(disp["inputs"], disp["n_layers"])]
    cols = [Col("problem", "shape"), Col("within", "within"), Col("inputs_text", "inputs")]
    cols += [Col(key, header, fmt, numeric) for key, header, fmt, numeric in FIELDS
             if not numeric or (key in disp.columns and pd.to_numeric(disp[key], errors="coerce").notna().any())]
    return disp, cols


def within_table(cheap: pd.DataFrame, per_layer: bool = False, varying=(), table_id: str | None = None):
    """``within_view`` as an escaped, sortable HTML table."""
    view, cols = within_view(cheap, per_layer, varying)
    return html_table(view, cols, table_id=table_id)


def oracle_gap_table(confs: pd.DataFrame, varying=()):
    """Each approximate configuration's output error beside the top-k oracle's with the same keys per
    query (``fidelity_topk_out_rel_error``): how far the pattern is from the best any sparse pattern of
    its budget could keep. None when no row has the oracle's figure."""
    col = "fidelity_topk_out_rel_error"
    if col not in confs.columns:
        return None
    rows = confs[pd.to_numeric(confs[col], errors="coerce").notna()].copy()
    if rows.empty:
        return None
    err = pd.to_numeric(rows["fidelity_out_rel_error"], errors="coerce")
    oracle = pd.to_numeric(rows[col], errors="coerce")
    rows["gap"] = (err / oracle.where(oracle > 0)).astype(float)
    rows["configuration"] = [config_label(r) for r in rows.to_dict("records")]
    rows["problem"] = [problem_label(r, varying) for r in rows.to_dict("records")]
    rows["layer"] = [("" if not _present(v) else f"layer {int(v)}") for v in rows["inputs_layer"]]
    rows = rows.sort_values(["problem", "inputs", "layer", "gap"], kind="stable")
    cols = [Col("problem", "shape"), Col("inputs", "inputs"), Col("layer", "layer"),
            Col("configuration", "configuration"),
            Col("fidelity_out_rel_error", "output error (%)", lambda v: fmt_num(to_pct(v)), True),
            Col(col, "top-k oracle, same budget (%)", lambda v: fmt_num(to_pct(v)), True),
            Col("gap", "error / oracle", lambda v: fmt_ratio(v), True)]
    return html_table(rows, cols, table_id="oracle-gap")


def perplexities(metas) -> list[str]:
    """The dense (global attention) perplexity of each run's model inputs (run.json ``inputs``)."""
    lines = []
    for meta in metas:
        given = meta.get("inputs")
        for item in given if isinstance(given, list) else [given]:
            ppl = item.get("perplexity") if isinstance(item, dict) else None
            if isinstance(ppl, (int, float)) and not isinstance(ppl, bool):
                lines.append(f"{item.get('id') or 'model inputs'} (run {meta.get('run_id', '')}): dense perplexity "
                             f"{fmt_num(ppl)}")
    return lines


def quality_section(frame: pd.DataFrame, metas=()) -> dict | None:
    """Everything the section shows, or None when no row has a fidelity value (older runs): one figure
    per input source, the overall and per-layer "cheapest within" tables, the dense perplexities."""
    if frame.empty or not has_fidelity(frame):
        return None
    confs = configurations(frame)
    if confs.empty:
        return None
    varying = [k for k in ("run_id", "device", "dtype") if k in confs.columns and confs[k].nunique() > 1]
    combined = over_layers(confs)
    cheap = cheapest_within(confs, THRESHOLDS)
    figures = []
    for source in _sources(combined):
        g = combined[combined["inputs"] == source]
        n_layers = int(g["n_layers"].max()) if len(g) else 0
        what = f"inputs {source}" + (f", worst of {n_layers} layers" if n_layers > 1 else "")
        figures.append({"inputs": source, "img": figure_img(plot_quality(g, f"Quality versus cost, {what}", varying),
                                                            f"quality versus cost, {what}")})
    has_layers = bool(cheap["inputs_layer"].notna().any())
    return {"figures": figures, "n_configurations": int(len(confs.drop_duplicates(
                [k for k in ("pattern", "window", "segment", "sinks", "stride", "globals", "topk", "causal")]))),
            "sources": _sources(confs), "overall": within_table(cheap, False, varying, "cheapest-within"),
            "per_layer": within_table(cheap, True, varying, "cheapest-within-layers") if has_layers else None,
            "oracle": oracle_gap_table(confs, varying),
            "perplexity": perplexities(metas)}
