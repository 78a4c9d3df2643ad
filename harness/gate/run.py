"""One gate run, from its frozen configuration to an exit status: check the settings, plan the cases,
check BASE_REF out in a temporary worktree, measure both trees in process pairs (``harness.gate.measure``),
judge them and re-measure flagged cases (``harness.gate.verdict``), then print the Markdown verdict
(``harness.render.gate``), append it to ``$GITHUB_STEP_SUMMARY`` and write ``--json``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.analysis.compare import summarize
from harness.analysis.stats import DEFAULT_CONFIDENCE, DEFAULT_THRESHOLD, check_threshold
from harness.core.errors import InputError
from harness.gate import DEFAULT_PROCESSES, DEFAULT_RECHECK_PROCESSES, DEFAULT_THREADS
from harness.gate.measure import WorkerError, accept_markers, measure_pairs, repo_root, resolve_ref
from harness.gate.verdict import Measurements, judge, merge_recheck
from harness.render.gate import gate_markdown
from harness.store.git import git


@dataclass(frozen=True)
class GateConfig:
    """What one gate run measures and how: the command line's options, checked by ``check``."""

    base_ref: str
    tree: str | None = None  # the checkout to test; None: the git checkout of the current directory
    preset: str = "regression"
    sweep_toml: str | None = None  # a sweep TOML instead of the preset
    processes: int = DEFAULT_PROCESSES
    recheck_processes: int = DEFAULT_RECHECK_PROCESSES
    threshold: float = DEFAULT_THRESHOLD
    confidence: float = DEFAULT_CONFIDENCE
    threads: int = DEFAULT_THREADS
    clock: str = "cpu"
    budget_s: float | None = None  # timing seconds per case per process; None: the preset's
    timeout_s: float | None = None  # longest wait for one answer of a worker; None: the preset's + 60
    json_path: str | None = None
    quiet: bool = False

    def check(self) -> None:
        check_threshold(self.threshold)
        if self.threads < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}")
        for name, least in (("processes", 2), ("recheck_processes", 0)):
            if getattr(self, name) < least:
                raise InputError(f"--{name.replace('_', '-')} must be >= {least}, got {getattr(self, name)}; "
                                 "hint: 5 per side is the default")


def plan(config: GateConfig) -> tuple[list[dict], object]:
    """The cases this machine can run (as case records with their ids) and the sweep's execution."""
    # local: run.validate and core.registry import torch; keeps `attnbench --help` fast
    from harness.core.registry import get_variant  # lazy: start-up
    from harness.run.config import expand  # lazy: start-up
    from harness.run.validate import build_config, load_toml  # lazy: start-up

    data = load_toml(config.sweep_toml, False) if config.sweep_toml else load_toml(config.preset, True)
    if config.budget_s is not None:
        data["budget_s"] = config.budget_s
    sweep = build_config(data)
    cases = [c for c in expand(sweep) if not get_variant(c.variant, **dict(c.params)).not_supported_reasons(c)]
    records = [{"case_id": c.id, **c.to_record()} for c in cases]
    if not records:
        raise InputError(f"{config.sweep_toml or 'preset ' + config.preset} has no case this machine can run; "
                         "hint: `attnbench list` says why")
    return records, sweep.execution


def measure_and_judge(config: GateConfig, trees: dict[str, Path], records: list[dict], accept: list[str],
                      measure: dict, log) -> tuple[pd.DataFrame, list[dict]]:
    """The verdict frame of ``config.processes`` pairs, with each slower case judged again on
    ``config.recheck_processes`` fresh pairs alone; and the records of the cases re-measured."""
    ids = [r["case_id"] for r in records]
    dtypes = {r["case_id"]: r["dtype"] for r in records}
    m = Measurements()
    measure_pairs(trees, records, config.processes, m, **measure)
    frame = judge(ids, m, config.threshold, config.confidence, accept, dtypes)
    flagged = frame.loc[frame["verdict"] == "slower", "case_id"].tolist()
    if not (flagged and config.recheck_processes):
        return frame, []
    log(f"re-measuring {len(flagged)} flagged case(s) in {config.recheck_processes} fresh process pairs, "
        f"judged on those alone: {', '.join(flagged)}")
    rechecked = [r for r in records if r["case_id"] in flagged]
    fresh = Measurements()
    measure_pairs(trees, rechecked, config.recheck_processes, fresh, **measure)
    again = judge(flagged, fresh, config.threshold, config.confidence, accept, dtypes)
    return merge_recheck(frame, again), rechecked


def run_gate(config: GateConfig) -> int:
    """Measure, judge and report (see ``harness.gate``); the exit status: 0 pass, 1 regression, 2 when
    no case could be compared. Bad input and a side that could not be measured raise InputError."""
    config.check()
    log = (lambda msg: None) if config.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    tree = repo_root(Path(config.tree or os.getcwd()).resolve())
    base_sha = resolve_ref(tree, config.base_ref)
    records, execution = plan(config)
    accept = accept_markers(tree, base_sha)
    head = git(tree, "rev-parse", "--short", "HEAD", check=False) or "?"
    dirty = bool(git(tree, "status", "--porcelain", "--untracked-files=no", check=False))
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="attnbench-ci-"))
    worktree = tmp / "base"
    timeout_s = config.timeout_s if config.timeout_s is not None else execution.timeout_s + 60.0  # + start-up
    measure = dict(budget_s=execution.budget_s, threads=config.threads, clock=config.clock, timeout_s=timeout_s,
                   log=log)
    try:
        git(tree, "worktree", "add", "--detach", str(worktree), base_sha)
        log(f"attnbench ci: {len(records)} cases, base {base_sha[:10]} ({config.base_ref}) checked out in {worktree} "
            f"vs {tree} (HEAD {head}{', dirty' if dirty else ''}); {config.processes} process pairs")
        try:
            frame, rechecked = measure_and_judge(config, {"base": worktree, "new": tree}, records, accept, measure, log)
        except WorkerError as exc:
            raise InputError(f"could not measure: {exc}") from None
    finally:
        git(tree, "worktree", "remove", "--force", str(worktree), check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        git(tree, "worktree", "prune", check=False)
    wall = time.perf_counter() - started
    s = summarize(frame)
    accepted = frame.loc[frame["verdict"] == "accepted", "case_id"].tolist()
    info = {"base_ref": config.base_ref, "base_commit": base_sha, "tree": str(tree), "head": head, "dirty": dirty,
            "exit_code": 1 if s["failing"] else 0,
            "title": "REGRESSION" if s["failing"] else ("regression accepted" if accepted else "no regression"),
            "wall_s": wall, "processes": config.processes,
            "recheck_processes": config.recheck_processes, "rechecked": [r["case_id"] for r in rechecked],
            "threshold": config.threshold, "confidence": config.confidence, "clock": config.clock,
            "threads": config.threads, "accept_markers": accept}
    text = gate_markdown(frame, info)
    print(text)
    if config.json_path:
        Path(config.json_path).write_text(json.dumps({**info, "cases": json.loads(frame.to_json(orient="records"))},
                                                     indent=2))
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        with open(summary_path, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    if s["compared"] == 0:  # nothing could be compared: not a pass
        print("attnbench ci: error: no case could be compared (every case erred, did not run or is new); "
              "hint: `attnbench list` says why a variant cannot run here", file=sys.stderr)
        return 2
    return info["exit_code"]
