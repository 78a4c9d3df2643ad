"""Resuming a run in its own folder: the run's stored configuration read back, the grid and the
environment checked against now, and the execution changed where the user asks."""

from __future__ import annotations

import time
from pathlib import Path

from harness.core.errors import InputError
from harness.run.config import EXECUTION_KEYS, Execution, SweepConfig
from harness.run.progress import say
from harness.run.validate import build_config
from harness.store.load import read_meta
from harness.store.provenance import environment_fingerprint, provenance
from harness.store.schema import RUN_JSON, SCHEMA_VERSION

# What a run written before such a sweep key existed was measured with.
BEFORE_KEYS = {"allocator": "system", "compile_ahead": False, "short_rounds": 1}
SPLIT_FROM_RETRIES = ("ceiling_retries", "recheck_retries")  # before they had names, ``retries`` bounded them too


def stored_config(run_dir: Path, meta: dict) -> SweepConfig:
    """The configuration a run was started with (run.json's ``sweep``), keys it predates filled in as
    it measured them."""
    stored = {**BEFORE_KEYS, **meta["sweep"]}
    if "retries" in stored:
        for key in SPLIT_FROM_RETRIES:
            stored.setdefault(key, stored["retries"])
    try:
        return build_config(stored)
    except InputError as exc:
        raise InputError(f"cannot resume {run_dir}: {exc}") from None


def resumed_config(run_dir: Path, meta: dict, given: SweepConfig | None, options: dict,
                   quiet: bool) -> SweepConfig:
    """The run's stored configuration with the execution changed by ``options`` (the executor is the
    invocation's: local unless given). ``given`` (if any) must describe the same cases. Each change is
    logged and recorded in run.json's ``resumes``."""
    stored = stored_config(run_dir, meta)
    if given is not None:
        diff = stored.grid.same_cases(given.grid)
        if diff:
            raise InputError(f"cannot resume {run_dir}: its sweep differs from the one given ({', '.join(diff)}); "
                             "hint: resume with --resume DIR alone (execution options may change: "
                             f"{', '.join('--' + k.replace('_', '-') for k in EXECUTION_KEYS)}), or start a new run")
    here = {k: getattr(Execution, k) for k in Execution.PER_INVOCATION}
    try:
        config = build_config({**stored.to_dict(), **here, **options})
    except InputError as exc:
        raise InputError(f"cannot resume {run_dir}: {exc}") from None
    before, now = stored.to_dict(), config.to_dict()
    changed = {k: [before[k], now[k]] for k in EXECUTION_KEYS
               if k not in Execution.PER_INVOCATION and before[k] != now[k]}
    if changed:
        meta.setdefault("resumes", []).append({"at": time.time(), "changed": changed})
        say(quiet, "resuming with " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    meta["sweep"] = now
    return config


def check_resumable(run_dir: Path) -> dict:
    """The run's run.json, if this attnbench, in this environment, can finish it; else an InputError."""
    meta = read_meta(run_dir, "cannot resume")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"cannot resume {run_dir}: schema_version {meta.get('schema_version')!r}, "
                         f"this attnbench writes {SCHEMA_VERSION}; hint: start a new run")
    damaged = [k for k, kind in (("run_id", str), ("calibration", list), ("ceilings_flops_per_s", dict))
               if not isinstance(meta.get(k), kind)]
    if damaged:
        raise InputError(f"cannot resume {run_dir}: its {RUN_JSON} lacks a valid {', '.join(damaged)}; the run "
                         "folder is damaged. Hint: start a new run")
    stored_env = environment_fingerprint(meta["provenance"])
    here = environment_fingerprint(provenance(meta["provenance"].get("device") or meta["sweep"].get("device", "cpu")))
    diff = {k: (stored_env[k], here[k]) for k in stored_env if stored_env[k] != here[k]}
    if diff:
        detail = ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in diff.items())
        raise InputError(f"cannot resume {run_dir}: the environment differs ({detail}); its numbers would not "
                         "be comparable. Hint: start a new run")
    return meta
