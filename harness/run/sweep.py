"""The sweep: a frozen config expanded into cases, each measured by an executor into exactly one
journaled row, whatever happens; machine figures (ceiling, calibration) in run.json.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from harness.bench.machine import matmul_flops_per_s
from harness.bench.timing import calibrate as calibration_entry
from harness.core.case import DTYPES, STATUSES, Case
from harness.core.errors import InputError
from harness.run.config import SweepConfig, build_config, expand
from harness.run.executors import InProcess, Isolated
from harness.run.progress import Progress
from harness.store.journal import Journal, write_json
from harness.store.load import write_tables
from harness.store.provenance import environment_fingerprint, new_run_id, provenance
from harness.store.schema import JOURNAL, RUN_JSON, SCHEMA_VERSION

RESULTS_ROOT = Path("results")


def make_row(run_id: str, case: Case, metrics: dict, isolated: bool, wall_s: float) -> dict:
    row = {"run_id": run_id, "case_id": case.id, **case.to_record(), "flops": case.flops, **metrics}
    row.update(isolated=isolated, wall_s=wall_s, finished_at=time.time())
    if row["status"] not in STATUSES:
        raise AssertionError(f"bad status {row['status']!r}")
    return row


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def measure_ceilings(config: SweepConfig, quiet: bool) -> dict[str, float]:
    """The device's matmul FLOP/s per swept dtype, measured once per run (kept on resume)."""
    _log(quiet, f"measuring the {config.device} matmul ceiling for {', '.join(config.dtypes)} ...")
    ceilings = {}
    for dt in config.dtypes:
        try:
            ceilings[dt] = matmul_flops_per_s(config.device, DTYPES[dt])
        except Exception as exc:  # e.g. no CUDA: the cases will say why; the run still happens
            _log(quiet, f"  no ceiling for {dt}: {type(exc).__name__}: {exc}")
    return ceilings


def calibrate(device: str, when: str) -> dict:
    """One calibration entry for run.json; a failure is recorded, not raised."""
    try:
        return {"when": when, **calibration_entry(device)}
    except Exception as exc:
        return {"when": when, "error": f"{type(exc).__name__}: {exc}"}


def run_sweep(config: SweepConfig | None = None, out: str | Path | None = None, resume: str | Path | None = None,
              quiet: bool = False, isolate: bool | None = None) -> Path:
    """Run (or resume) a sweep; returns the run folder. Ctrl-C saves everything finished and re-raises."""
    if resume is not None:
        run_dir = Path(resume)
        meta = _check_resumable(run_dir, config)
        config = build_config(meta["sweep"])
    else:
        assert config is not None
        if isolate is not None:
            config = SweepConfig(**{**config.__dict__, "isolate": isolate})
        run_id = new_run_id(config.name)
        run_dir = Path(out) if out is not None else RESULTS_ROOT / run_id
        if run_dir.exists() and any(run_dir.iterdir()):
            raise InputError(f"output folder {run_dir} exists and is not empty; hint: pick another --out, or "
                             f"finish it with --resume {run_dir}")
        run_dir.mkdir(parents=True, exist_ok=True)
        meta = {"schema_version": SCHEMA_VERSION, "run_id": run_dir.name, "status": "running",
                "started_at": time.time(), "finished_at": None, "provenance": provenance(config.device),
                "sweep": config.to_dict(), "calibration": [], "ceilings_flops_per_s": {}}
    cases = expand(config)
    journal = Journal(run_dir / JOURNAL)
    rows = journal.read(repair=True)
    done = {r["case_id"] for r in rows}
    todo = [c for c in cases if c.id not in done]
    _log(quiet, f"run {run_dir}: {len(cases)} cases, {len(done)} already done, {len(todo)} to run"
                f"{' (isolated)' if config.isolate else ''}")
    if not meta["ceilings_flops_per_s"]:
        meta["ceilings_flops_per_s"] = measure_ceilings(config, quiet)
    if todo:
        meta["calibration"].append(calibrate(config.device, "resume" if resume else "start"))
    meta["status"] = "running"
    write_json(run_dir / RUN_JSON, meta)

    runner = (Isolated if config.isolate else InProcess)(config, meta["ceilings_flops_per_s"])
    progress = Progress(len(cases), len(done), quiet)
    try:
        for case in todo:
            progress.show(case)
            t0 = time.perf_counter()
            metrics = runner.metrics(case)
            row = make_row(meta["run_id"], case, metrics, config.isolate, time.perf_counter() - t0)
            journal.append(row)
            rows.append(row)
            progress.advance()
    except KeyboardInterrupt:
        progress.close()
        journal.close()
        _finish(run_dir, meta, rows, "interrupted", config, quiet)
        _log(False, f"interrupted: {len(rows)} of {len(cases)} cases saved in {run_dir}; "
                    f"finish with: attnbench sweep --resume {run_dir}")
        raise
    progress.close()
    journal.close()
    _finish(run_dir, meta, rows, "complete", config, quiet)
    return run_dir


def _finish(run_dir: Path, meta: dict, rows: list[dict], status: str, config: SweepConfig, quiet: bool) -> None:
    if status == "complete":
        meta["calibration"].append(calibrate(config.device, "end"))
    write_tables(run_dir, rows)
    counts = Counter(r["status"] for r in rows)
    meta.update(status=status, finished_at=time.time(), counts=dict(counts))
    write_json(run_dir / RUN_JSON, meta)
    for s in STATUSES:
        if counts.get(s):
            _log(quiet, f"{s:>12}: {counts[s]}")


def _check_resumable(run_dir: Path, config: SweepConfig | None) -> dict:
    meta_path = run_dir / RUN_JSON
    if not meta_path.exists():
        raise InputError(f"cannot resume {run_dir}: it has no {RUN_JSON}; hint: pass a folder made by "
                         "`attnbench sweep`")
    meta = json.loads(meta_path.read_text())
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"cannot resume {run_dir}: schema_version {meta.get('schema_version')!r}, "
                         f"this attnbench writes {SCHEMA_VERSION}")
    given = json.loads(json.dumps(config.to_dict())) if config is not None else None
    if given is not None and given != meta["sweep"]:
        stored = meta["sweep"]
        diff = [k for k in stored if stored.get(k) != given.get(k)]
        raise InputError(f"cannot resume {run_dir}: its sweep differs from the one given ({', '.join(diff)}); "
                         "hint: resume with --resume DIR alone, or start a new run")
    stored_env = environment_fingerprint(meta["provenance"])
    here = environment_fingerprint(provenance(meta["provenance"]["device"]))
    diff = {k: (stored_env[k], here[k]) for k in stored_env if stored_env[k] != here[k]}
    if diff:
        detail = ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in diff.items())
        raise InputError(f"cannot resume {run_dir}: the environment differs ({detail}); its numbers would not "
                         "be comparable. Hint: start a new run")
    return meta
