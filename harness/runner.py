"""The sweep runner: every planned case becomes exactly one row in the journal, whatever happens."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from harness.case import Case
from harness.patterns import InputError
from harness.results import (JOURNAL, RUN_JSON, SCHEMA_VERSION, Journal, environment_fingerprint, new_run_id,
                             provenance, write_json, write_tables)
from harness.sweep import STATUSES, SweepConfig, build_config, expand

ROW_MARKER = "@@attnbench-row@@"
RESULTS_ROOT = Path("results")


class CaseTimeout(Exception):
    pass


def classify(exc: BaseException) -> tuple[str, str]:
    """(status, reason) for an exception raised while measuring a case."""
    import torch

    reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".strip()
    if isinstance(exc, CaseTimeout):
        return "timeout", str(exc)
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return "oom", reason
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower()):
        return "oom", reason
    return "error", reason


class _Alarm:
    """SIGALRM-based bound on one in-process case (main thread only; C kernels finish their call first)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")

    def _fire(self, signum, frame):
        raise CaseTimeout(f"case exceeded --timeout-s {self.seconds:g} s")

    def __enter__(self):
        if self.active:
            self._old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)
        return False


class InProcess:
    """Measures cases in this process, reusing variant instances (and their compiled functions)."""

    def __init__(self, config: SweepConfig, ceilings: dict[str, float]) -> None:
        from harness.measure import ReferenceCache

        self.config, self.ceilings = config, ceilings
        self.variants: dict = {}
        self.ref_cache = ReferenceCache()

    def variant(self, case: Case):
        from harness.registry import get_variant

        key = (case.variant, case.params)
        if key not in self.variants:
            self.variants[key] = get_variant(case.variant, **dict(case.params))
        return self.variants[key]

    def metrics(self, case: Case) -> dict:
        import torch

        from harness.measure import measure

        try:
            variant = self.variant(case)
            reasons = variant.not_supported_reasons(case)
            if reasons:
                return {"status": "unsupported", "reason": "; ".join(reasons)}
            with _Alarm(self.config.timeout_s):
                return measure(variant, case, self.config.budget_s, self.ceilings.get(case.dtype),
                               max_error_elements=self.config.max_error_elements, ref_cache=self.ref_cache)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # every failure becomes a row; the sweep goes on
            status, reason = classify(exc)
            return {"status": status, "reason": reason}
        finally:
            if case.device == "cuda" and torch.cuda.is_available():
                torch.cuda.empty_cache()


class Isolated:
    """Measures each case in a fresh `python -m harness.worker` process, killed at the timeout."""

    def __init__(self, config: SweepConfig, ceilings: dict[str, float]) -> None:
        self.config, self.ceilings = config, ceilings

    def metrics(self, case: Case) -> dict:
        job = {"case": case.to_record(), "config": self.config.to_dict(), "ceiling": self.ceilings.get(case.dtype)}
        proc = subprocess.Popen([sys.executable, "-m", "harness.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(json.dumps(job), timeout=self.config.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"status": "timeout", "reason": f"worker process exceeded --timeout-s {self.config.timeout_s:g} s "
                                                   "and was killed"}
        for line in out.splitlines():
            if line.startswith(ROW_MARKER):
                return json.loads(line[len(ROW_MARKER):])
        if proc.returncode < 0:
            sig = signal.Signals(-proc.returncode).name
            status = "oom" if sig == "SIGKILL" else "error"
            hint = " (killed: likely out of memory)" if sig == "SIGKILL" else ""
            return {"status": status, "reason": f"worker process died with {sig}{hint}"}
        tail = (err.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "reason": f"worker process exited with code {proc.returncode}: {tail}"}


def make_row(run_id: str, case: Case, metrics: dict, isolated: bool, wall_s: float) -> dict:
    row = {"run_id": run_id, "case_id": case.id, **case.to_record(), "flops": case.flops, **metrics}
    row.update(isolated=isolated, wall_s=wall_s, finished_at=time.time())
    if row["status"] not in STATUSES:
        raise AssertionError(f"bad status {row['status']!r}")
    return row


class Progress:
    """A rich progress bar (current case, done/total, ETA) on a terminal; silent otherwise or when quiet."""

    def __init__(self, total: int, done: int, quiet: bool) -> None:
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True)
            self.task = self.bar.add_task("starting", total=total, completed=done)
            self.bar.start()

    def show(self, case: Case) -> None:
        if self.bar:
            self.bar.update(self.task, description=case.id[:48])

    def advance(self) -> None:
        if self.bar:
            self.bar.advance(self.task)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def measure_ceilings(config: SweepConfig, quiet: bool) -> dict[str, float]:
    """The device's matmul FLOP/s per swept dtype, measured once per run (kept on resume)."""
    from harness.case import DTYPES
    from harness.measure import matmul_flops_per_s

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
    from harness.measure import calibration

    try:
        return {"when": when, **calibration(device)}
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
