"""The one command that measures a single cell of a run again on its own: an ``attnbench sweep`` with
every axis pinned to that cell's case fields and the run's timing budget, what a user pastes into a
bug report. ``repro_command`` builds it from one tidy row; ``find_row`` finds the row of a case id.
Pure functions of rows and run.json; nothing is run.
"""

from __future__ import annotations

import json
import math
import shlex

import pandas as pd

from harness.core.errors import InputError
from harness.core.patterns import PATTERN_PARAMS


def _given(v) -> bool:
    if v is None or v is pd.NA:
        return False
    if isinstance(v, float) and math.isnan(v):
        return False
    return not (isinstance(v, str) and not v.strip())


def _int(v) -> int | None:
    return int(v) if _given(v) else None


def _docs(v) -> int | None:
    """Documents per sequence of a ``doc_lens`` cell (JSON text or a list), None without one."""
    if not _given(v):
        return None
    lens = json.loads(v) if isinstance(v, str) else list(v)
    return len(lens) or None


def repro_command(row: dict, meta: dict | None = None) -> str:
    """``attnbench sweep ...`` measuring only the case of ``row`` (a tidy row: base units, case fields),
    with the run's ``--budget-s`` (from run.json's sweep) when known; for an ``unsupported`` row,
    ``--all-cells``, so that the row and its reason are written again even for a variant that cannot
    run on the device at all (a sweep leaves those out otherwise). Variant parameters the sweep set
    (run.json's sweep ``params``) cannot be given on the command line: they follow as a comment
    naming them."""
    sweep = (meta or {}).get("sweep") or {}
    n, q, kv = _int(row.get("seq_len")), _int(row.get("q_len")), _int(row.get("kv_len"))
    args = ["attnbench", "sweep", "--variants", str(row["variant"]), "--patterns", str(row["pattern"]),
            "--causal", "yes" if bool(row.get("causal")) else "no"]
    if q is not None and kv is not None and q != kv:
        args += ["--q-lens", str(q), "--kv-lens", str(kv)]
    else:
        args += ["--seq-lens", str(n)]
    args += ["--batch", str(_int(row.get("batch"))), "--heads", str(_int(row.get("heads")))]
    kv_heads = _int(row.get("kv_heads"))
    if kv_heads is not None and kv_heads != _int(row.get("heads")):
        args += ["--kv-heads", str(kv_heads)]
    args += ["--head-dims", str(_int(row.get("head_dim"))), "--dtypes", str(row["dtype"]),
             "--device", str(row["device"]), "--passes", str(row["pass"])]
    for key in PATTERN_PARAMS.get(str(row.get("pattern")), ()):  # the pattern's own parameters: --window 128 ...
        if _given(row.get(key)):
            args += [f"--{key}", str(_int(row[key]))]
    docs = _docs(row.get("doc_lens")) if row.get("pattern") == "document" else None
    if docs:
        args += ["--docs", str(docs)]
    threads = _int(row.get("threads"))
    if threads is not None:
        args += ["--threads", str(threads)]
    if isinstance(sweep.get("budget_s"), (int, float)):
        args += ["--budget-s", f"{sweep['budget_s']:g}"]
    if row.get("status") == "unsupported":  # its row again, with its reason, even where the variant cannot run at all
        args += ["--all-cells"]
    command = shlex.join(args)
    params = dict(sweep.get("params") or {}).get(str(row["variant"])) or {}
    if isinstance(params, dict) and params:
        command += f"  # with variant parameters {json.dumps(params, sort_keys=True)} (set them in a --config TOML)"
    return command


def find_row(df: pd.DataFrame, case_id: str) -> dict:
    """The row of ``case_id`` (an InputError naming close ids when there is none)."""
    hits = df[df["case_id"].astype(str) == case_id] if "case_id" in df.columns else df.iloc[:0]
    if len(hits):
        return hits.iloc[0].to_dict()
    ids = df["case_id"].astype(str).tolist() if "case_id" in df.columns else []
    close = [i for i in ids if case_id.split("/")[0] in i][:3] or ids[:3]
    raise InputError(f"no case {case_id!r} in this run; hint: one of its case ids, e.g. "
                     f"{', '.join(close) or '(the run has no rows)'} (attnbench show RUN --all lists them)")
