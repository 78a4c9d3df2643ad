"""The sweep: a frozen config expanded into cases, each measured by an executor into exactly one
journaled row, whatever happens; then the re-measurements (harness.run.remeasure), the machine
figures (harness.run.figures) and the tables. Before the first case, the CPU cases of compiling
variants are compiled in parallel (harness.run.ahead).

A run folder has one writer (``harness.store.lock``). Resuming finishes a run in its own folder
(harness.run.resume). The case being measured is recorded (``in_progress``) before it starts, so
after a crash of the process itself the resume names it and suggests ``--isolate``; Ctrl-C, SIGTERM
and SIGHUP are stops, not crashes (harness.run.stops).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from pathlib import Path

from harness.analysis.trust import assess
from harness.analysis.trust import summary as trust_summary
from harness.bench.heap import pin_allocator
from harness.core.case import STATUSES, Case
from harness.core.errors import InputError
from harness.core.registry import discover
from harness.run.ahead import compile_ahead
from harness.run.budget import TrustBudget
from harness.run.config import EXECUTION_KEYS, SweepConfig, planned
from harness.run.eta import EndEstimate
from harness.run.executors import InProcess, Isolated
from harness.run.inputs import inputs_meta
from harness.run.figures import against, calibrate, keep_best_ceilings, measure_ceilings, measure_end
from harness.run.progress import Phases, Progress, say
from harness.run.quiet import recheck_wait_budget_s
from harness.run.remeasure import Cells, more_rounds, recheck_flagged, remeasure_suspects
from harness.run.resume import check_resumable, resumed_config
from harness.run.stops import stops_as_interrupts
from harness.run.validate import build_config
from harness.store.journal import InProgress, Journal, write_json
from harness.store.load import select_rows, write_tables
from harness.store.lock import LOCK_FILE, RunLock
from harness.store.provenance import new_run_id, provenance
from harness.store.schema import JOURNAL, RUN_JSON, SCHEMA_VERSION

RESULTS_ROOT = Path("results")


def make_row(run_id: str, case: Case, metrics: dict, isolated: bool, wall_s: float) -> dict:
    row = {"run_id": run_id, "case_id": case.id, **case.to_record(), "flops": case.flops, "bytes": case.bytes,
           **metrics}
    row.update(isolated=isolated, wall_s=wall_s, finished_at=time.time())
    if row["status"] not in STATUSES:
        raise AssertionError(f"bad status {row['status']!r}")
    return row


def run_sweep(config: SweepConfig | None = None, out: str | Path | None = None, resume: str | Path | None = None,
              quiet: bool = False, options: dict | None = None, **execution) -> Path:
    """Run (or resume) a sweep; returns the run folder. A stop (Ctrl-C, SIGTERM, SIGHUP) saves everything
    finished and re-raises.

    ``options`` and keyword arguments (``isolate=True``, ``executor="ray"``, ...) set execution keys
    (``EXECUTION_KEYS``; None: unset). On resume, ``config`` (if given) must describe the same cases;
    the run keeps its execution except what these change, and runs on the local executor unless told.
    """
    options = {**(options or {}), **{k: v for k, v in execution.items() if v is not None}}
    unknown = sorted(set(options) - set(EXECUTION_KEYS))
    if unknown:
        raise InputError(f"{unknown[0]!r} is not an execution option; valid: {', '.join(EXECUTION_KEYS)}")
    with stops_as_interrupts():
        if resume is not None:
            run_dir = Path(resume)
            if out is not None and Path(out).resolve() != run_dir.resolve():
                raise InputError(f"--resume {run_dir} finishes the run in its own folder, so --out {out} cannot "
                                 f"apply; hint: drop --out, or start a new run with --out {out}")
            meta = check_resumable(run_dir)
            with RunLock(run_dir):
                config = resumed_config(run_dir, meta, config, options, quiet)
                return _sweep(run_dir, meta, config, True, quiet)
        assert config is not None
        if options:
            config = build_config({**config.to_dict(), **options})
        run_dir = Path(out) if out is not None else RESULTS_ROOT / new_run_id(config.grid.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        with RunLock(run_dir):  # first: a folder another sweep is writing names that sweep
            _check_new(run_dir)
            meta = {"schema_version": SCHEMA_VERSION, "run_id": run_dir.name, "status": "running",
                    "started_at": time.time(), "finished_at": None, "provenance": provenance(config.grid.device),
                    "sweep": config.to_dict(), "inputs": inputs_meta(config.grid), "calibration": [],
                    "ceilings_flops_per_s": {}}
            return _sweep(run_dir, meta, config, False, quiet)


def _check_new(run_dir: Path) -> None:
    if run_dir.exists() and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        raise InputError(f"output folder {run_dir} exists and is not empty; hint: pick another --out, or "
                         f"finish it with --resume {run_dir}")


def _sweep(run_dir: Path, meta: dict, config: SweepConfig, resumed: bool, quiet: bool) -> Path:
    ex = config.execution
    cases, left_out = planned(config)
    if left_out and len(left_out) == len(config.grid.variants):
        detail = "; ".join(f"{name}: {'; '.join(reasons)}" for name, reasons in left_out.items())
        raise InputError(f"no variant of this sweep can run on {config.grid.device} ({detail}); hint: another "
                         "--device or --variants (attnbench list says which run here), or --all-cells to record "
                         "the refusals as rows")
    meta["unavailable"] = left_out
    for name, reasons in left_out.items():
        say(quiet, f"{name} cannot run on {config.grid.device} at all ({'; '.join(reasons)}): its cells are left "
                   "out of the table (--all-cells keeps them as rows)")
    ids = {c.id for c in cases}
    journal = Journal(run_dir / JOURNAL)
    rows = journal.read(repair=True)
    rows = [rows[i] for i in select_rows(rows, meta["run_id"], lambda r: r["case_id"] in ids, str(journal.path))]
    done = {r["case_id"] for r in rows}
    todo = [c for c in cases if c.id not in done]
    say(quiet, f"run {run_dir}: {len(cases)} cases, {len(done)} already done, {len(todo)} to run"
               f"{' (isolated)' if ex.isolate else ''}")
    ray_exec = None
    if ex.executor == "ray" and todo:  # connects and checks the cluster before any case is sent
        from harness.run.ray_executor import RayExecutor

        ray_exec = RayExecutor(config, ex.ray_address, ex.ray_cpus_per_case, quiet)
        say(quiet, "ray: each cell is measured once, on its node (its --retries there); the planned rounds "
                   "(--rounds, --short-rounds), the cross-cell re-measurements and the end-of-run re-check are not "
                   "done on Ray (local executor only; docs/scale-out.md)")
    kept = {k: v for k, v in (meta.get("execution") or {}).items() if k != "executor" and not k.startswith("ray_")}
    meta["execution"] = {**kept, **(ray_exec.execution() if ray_exec else {"executor": ex.executor})}
    marker = InProgress(run_dir)
    crashed = marker.get()
    if crashed is not None and crashed not in done:
        then = ("it runs again now, isolated" if ex.isolate else
                f"hint: attnbench sweep --resume {run_dir} --isolate (each case in a subprocess, so a crash "
                "becomes a row)")
        say(False, f"warning: case {crashed} was in progress when the run stopped (a crash?); {then}")
    when, phase = "resume" if resumed else "start", Phases(meta)
    try:
        _pin_allocator(meta, ex.allocator, quiet)  # before anything is timed (workers pin their own)
        with phase("machine figures"):
            if ray_exec:  # per node, on the node, as its cases will run (run.json "nodes")
                ray_exec.measure_nodes(meta, when)
            elif not meta["ceilings_flops_per_s"] or (resumed and todo):  # at the start, and again on resume
                keep_best_ceilings(meta, measure_ceilings(config.grid.device, config.grid.dtypes, quiet), when)
            if todo and not ray_exec:
                meta["calibration"].append(calibrate(config.grid.device, when))
        meta["status"] = "running"
        write_json(run_dir / RUN_JSON, meta)
        if todo and not ray_exec and ex.compile_ahead:
            _compile_ahead(run_dir, meta, todo, quiet, phase)
        return _run_cases(run_dir, meta, config, cases, todo, rows, journal, marker, ray_exec, quiet, phase)
    finally:
        if ray_exec:
            ray_exec.close()


def _compile_ahead(run_dir: Path, meta: dict, todo: list[Case], quiet: bool, phase: Phases) -> None:
    """Compile the compiling variants' cases ahead (harness.run.ahead), after run.json exists. It only
    ever saves time: an error in it is a warning. A stop there leaves an interrupted run to resume."""
    try:
        with phase("compile ahead"):
            ahead = compile_ahead(todo, discover(), quiet)
    except KeyboardInterrupt as stop:
        meta["status"] = "interrupted"
        write_json(run_dir / RUN_JSON, meta)
        say(False, f"{_stop_text(stop)} while compiling ahead, before the first case; finish with: "
                   f"attnbench sweep --resume {run_dir}")
        raise
    except Exception as exc:  # noqa: BLE001 - the sweep compiles each case itself, as without it
        say(False, f"warning: compiling ahead failed ({type(exc).__name__}: {exc}); the sweep compiles each case "
                   "itself (--no-compile-ahead skips it)")
        return
    if ahead:
        meta.setdefault("compile_ahead", []).append(ahead)


def _pin_allocator(meta: dict, allocator: str, quiet: bool) -> None:
    """Pin the host allocator as the sweep asks; run.json's ``allocator`` keeps the start's state, and
    a resume whose state differs (pinned elsewhere, another malloc) is warned about and recorded."""
    now = pin_allocator(allocator)
    if now["allocator"] != allocator:
        say(False, f"warning: asked for --allocator {allocator}, but the host allocator is "
                   f"{now['allocator']} ({now['reason']}); times of cells with big temporaries may differ")
    before = meta.get("allocator")
    if before is None:
        meta["allocator"] = now
    elif before.get("allocator") != now["allocator"]:
        say(False, f"warning: this run started with the host allocator {before.get('allocator')}, its rest runs "
                   f"with {now['allocator']} ({now['reason']})")
        meta.setdefault("resumes", []).append({"at": time.time(), "allocator": now})


def _run_cases(run_dir, meta, config, cases, todo, rows, journal, marker, ray_exec, quiet, phase) -> Path:
    ex = config.execution

    def record(case: Case, metrics: dict, wall_s: float) -> None:
        row = make_row(meta["run_id"], case, metrics, ex.isolate, wall_s)
        journal.append(row)
        rows.append(row)

    done = len(cases) - len(todo)
    budget = TrustBudget(ex.trust_budget)
    budget.merge((meta.get("trust") or {}).get("budget"))  # a resume goes on with the run's budget
    runner = (Isolated if ex.isolate else InProcess)(config, meta["ceilings_flops_per_s"], budget)
    runner.seed_calibration(meta, rows)  # samples timed while the machine is slow are judged from the first case
    end = EndEstimate(len(todo), budget, ex.recheck_retries, ex.rounds, ex.short_rounds)
    end.seed(runner.best_calibration, runner.best_sync)
    if _local(meta):  # a resume's rows: the rounds they still owe (a Ray run plans none)
        end.owe(rows)
    progress = Progress(len(cases), done, quiet or ray_exec is not None,  # Ray: plain lines of its own
                        after_s=end.seconds)
    started = time.perf_counter()
    try:
        with phase("cases"):
            if ray_exec:  # rows arrive as tasks finish; this process stays the only writer of the journal
                ray_exec.run(todo, meta, record, len(cases), done)
            for case in todo if not ray_exec else ():
                progress.show(case)
                marker.set(case.id)
                t0 = time.perf_counter()
                record(case, runner.metrics(case), time.perf_counter() - t0)
                end.add(rows[-1])
                progress.advance()
            progress.close()  # one live bar at a time: the rounds show their own
        budget.first_pass = False
        if _local(meta):  # not for a Ray run, even a resume with nothing left to send
            cells = Cells(rows, {c.id: c for c in cases}, runner, record, meta, quiet, budget)
            took = time.perf_counter() - started
            with phase("rounds"):
                more_rounds(cells, ex.rounds, ex.short_rounds)
            with phase("cross-cell re-measurements"):
                remeasure_suspects(cells)
            with phase("machine figures"):
                measure_end(meta, rows, config.grid.device, config.grid.dtypes, ex.ceiling_retries, quiet)
            runner.seed_calibration(meta, rows)  # the end's calibration may be the run's best
            with phase("re-check"):
                recheck_flagged(cells, ex.recheck_retries, recheck_wait_budget_s(ex, took))
    except KeyboardInterrupt as stop:
        progress.close()
        journal.close()
        marker.clear()  # stopped, not crashed
        meta["trust_budget"] = budget.summary()
        _add_cost(meta, runner)
        _finish(run_dir, meta, rows, "interrupted", quiet)
        say(False, f"{_stop_text(stop)}: {len(rows)} of {len(cases)} cases saved in {run_dir}; "
                   f"finish with: attnbench sweep --resume {run_dir}")
        raise
    except OSError as exc:  # the journal, the marker or a table cannot be written (a full disk)
        progress.close()
        with contextlib.suppress(OSError):  # its buffer cannot be written either
            journal.close()
        marker.clear()
        raise _cannot_write(exc, journal, run_dir) from None
    progress.close()
    journal.close()
    marker.clear()
    meta["trust_budget"] = budget.summary()
    _add_cost(meta, runner)
    if budget.refused:
        say(quiet, f"the run's trust budget ({budget.fraction:g}x its first pass, {budget.allowed_s:.0f} s) was "
                   f"spent: {budget.refused} re-measurement(s) not made; the cells still flagged keep their flags "
                   "(--trust-budget sets it)")
    try:
        with phase("tables"):
            _finish(run_dir, meta, rows, "complete", quiet, ray_exec)
        write_json(run_dir / RUN_JSON, meta)  # with the tables' time
    except OSError as exc:  # the tables or run.json cannot be written (a full disk): every row is journaled
        raise _cannot_write(exc, journal, run_dir) from None
    return run_dir


def _stop_text(stop: KeyboardInterrupt) -> str:
    """"interrupted" (Ctrl-C), or "stopped by SIGTERM" and the like (harness.run.stops)."""
    return "interrupted" if type(stop) is KeyboardInterrupt else f"stopped by {stop}"


def _add_cost(meta: dict, runner) -> None:
    """run.json's ``cost_s``: seconds per step of measuring the cases in this process (prepare, timing,
    peak memory, check, fidelity, re-measuring, the retries' waits for quiet; the re-check's waits are
    ``trust.recheck_wait``), summed over the run and its resumes; not kept for isolated workers."""
    cost = getattr(runner, "cost", None)
    if cost:
        total = dict(meta.get("cost_s") or {})
        for step, seconds in cost.items():
            total[step] = round(total.get(step, 0.0) + seconds, 3)
        meta["cost_s"] = total


def _cannot_write(exc: OSError, journal: Journal, run_dir: Path) -> InputError:
    """The one-line error for a file the run cannot write, with the resume that finishes it."""
    return InputError(f"cannot write {exc.filename or journal.path}: {exc.strerror or exc}; the rows finished "
                      f"are in {journal.path}; hint: free some space, then attnbench sweep --resume {run_dir}")


def _local(meta: dict) -> bool:
    """The run's cases are measured here (not by Ray nodes, whose machines differ)."""
    return (meta.get("execution") or {}).get("executor") != "ray"


def _finish(run_dir: Path, meta: dict, rows: list[dict], status: str, quiet: bool, ray_exec=None) -> None:
    if status == "complete" and ray_exec:
        ray_exec.measure_nodes(meta, "end")
    if _local(meta):  # against the best ceilings so far (the end's: measure_end)
        rows = [against(row, meta["ceilings_flops_per_s"]) for row in rows]
    rows = assess(rows, meta)  # time_trusted and time_flags, from the evidence beside each row
    write_tables(run_dir, rows)
    counts = Counter(r["status"] for r in rows)
    # The end-of-run re-check's waits for quiet (this session's, or a run's before its resume) are part of its trust.
    waited = meta.pop("recheck_wait", None) or (meta.get("trust") or {}).get("recheck_wait")
    spent = meta.pop("trust_budget", None) or (meta.get("trust") or {}).get("budget")
    meta.update(status=status, finished_at=time.time(), counts=dict(counts), trust=trust_summary(rows))
    if waited:
        meta["trust"]["recheck_wait"] = waited
    if spent:
        meta["trust"]["budget"] = spent
    write_json(run_dir / RUN_JSON, meta)
    for s in STATUSES:
        if counts.get(s):
            say(quiet, f"{s:>12}: {counts[s]}")
