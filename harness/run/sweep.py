"""The sweep: a frozen config expanded into cases, each measured by an executor into exactly one
journaled row, whatever happens; machine figures (ceiling, calibration) in run.json.

Resuming finishes a run in its own folder. The cases are fixed by the run's sweep; how they run
(``EXECUTION_KEYS``: isolate, timeout_s, budget_s) may change, and run.json records each change. The
case being measured is recorded (``in_progress``) before it starts, so after a crash of the process
itself the resume names it and suggests ``--isolate``.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from harness.analysis.rounds import keep_faster, merge_round, rounds_done
from harness.analysis.trust import (CEILING, RECHECK, ROUND_PREFIX, SLOW_MACHINE, assess, best_calibration,
                                    cross_suspects, flag_name, row_flags, worth_remeasuring)
from harness.analysis.trust import summary as trust_summary
from harness.bench.heap import pin_allocator
from harness.bench.machine import BANDWIDTH_KEY, copy_bytes_per_s, matmul_flops_per_s
from harness.bench.timing import calibrate as calibration_entry
from harness.core.case import DTYPES, STATUSES, Case
from harness.core.errors import InputError
from harness.run.config import SweepConfig, build_config, expand
from harness.run.executors import InProcess, Isolated, QuietWaiter, recheck_wait_budget_s, torch_threads
from harness.run.progress import Progress
from harness.store.journal import InProgress, Journal, write_json
from harness.store.load import read_meta, select_rows, write_tables
from harness.store.provenance import environment_fingerprint, new_run_id, provenance
from harness.store.schema import JOURNAL, RUN_JSON, SCHEMA_VERSION

RESULTS_ROOT = Path("results")
EXECUTION_KEYS = ("isolate", "timeout_s", "budget_s", "retries", "rounds", "recheck_wait_s")  # how cases run, not which: may change on resume
IGNORED_ON_RESUME = ("name",)  # a label: the resumed run keeps its own
BEFORE_KEYS = {"allocator": "system"}  # what a run written before such a sweep key existed was measured with


def make_row(run_id: str, case: Case, metrics: dict, isolated: bool, wall_s: float) -> dict:
    row = {"run_id": run_id, "case_id": case.id, **case.to_record(), "flops": case.flops, "bytes": case.bytes,
           **metrics}
    row.update(isolated=isolated, wall_s=wall_s, finished_at=time.time())
    if row["status"] not in STATUSES:
        raise AssertionError(f"bad status {row['status']!r}")
    return row


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def measure_ceilings(config: SweepConfig, quiet: bool) -> dict[str, float]:
    """The device's matmul FLOP/s per swept dtype, and its copy bandwidth under ``BANDWIDTH_KEY``,
    measured once per run (kept on resume)."""
    _log(quiet, f"measuring the {config.device} matmul ceiling for {', '.join(config.dtypes)} and its bandwidth ...")
    ceilings = {}
    try:
        ceilings[BANDWIDTH_KEY] = copy_bytes_per_s(config.device)
    except Exception as exc:  # e.g. no CUDA: the cases will say why; the run still happens
        _log(quiet, f"  no bandwidth ceiling: {type(exc).__name__}: {exc}")
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
              quiet: bool = False, isolate: bool | None = None, options: dict | None = None,
              executor: str = "local", ray_address: str | None = None, ray_cpus_per_case: int | None = None) -> Path:
    """Run (or resume) a sweep; returns the run folder. Ctrl-C saves everything finished and re-raises.

    ``executor`` is ``local`` (this process, or a fresh worker per case with ``isolate``) or ``ray``
    (``harness.run.ray_executor``: cases spread over a Ray cluster at ``ray_address``, a local instance
    when None); it is how the cases run, not which, so a run may be resumed with another executor.

    ``options`` (and ``isolate``, a shorthand) set execution options (``EXECUTION_KEYS``). On resume,
    ``config`` (if given) must describe the same cases; the run keeps its execution options except the
    ones ``options`` changes, for the cases still to run.
    """
    options = {**(options or {}), **({"isolate": isolate} if isolate is not None else {})}
    _check_executor(executor, ray_address, ray_cpus_per_case)
    unknown = sorted(set(options) - set(EXECUTION_KEYS))
    if unknown:
        raise InputError(f"{unknown[0]!r} is not an execution option; valid: {', '.join(EXECUTION_KEYS)}")
    if resume is not None:
        run_dir = Path(resume)
        if out is not None and Path(out).resolve() != run_dir.resolve():
            raise InputError(f"--resume {run_dir} finishes the run in its own folder, so --out {out} cannot apply; "
                             f"hint: drop --out, or start a new run with --out {out}")
        meta = _check_resumable(run_dir, config)
        config = _resumed_config(run_dir, meta, options, quiet)
        _check_rounds(executor, config)
    else:
        assert config is not None
        if options:
            config = build_config({**config.to_dict(), **options})
        _check_rounds(executor, config)
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
    ids = {c.id for c in cases}
    journal = Journal(run_dir / JOURNAL)
    rows = journal.read(repair=True)
    rows = [rows[i] for i in select_rows(rows, meta["run_id"], lambda r: r["case_id"] in ids, str(journal.path))]
    done = {r["case_id"] for r in rows}
    todo = [c for c in cases if c.id not in done]
    _log(quiet, f"run {run_dir}: {len(cases)} cases, {len(done)} already done, {len(todo)} to run"
                f"{' (isolated)' if config.isolate else ''}")
    ray_exec = None
    if executor == "ray" and todo:  # connects and checks the cluster before any case is sent
        from harness.run.ray_executor import RayExecutor

        ray_exec = RayExecutor(config, ray_address, ray_cpus_per_case, quiet)
    kept = {k: v for k, v in (meta.get("execution") or {}).items() if k != "executor" and not k.startswith("ray_")}
    meta["execution"] = {**kept, **(ray_exec.execution() if ray_exec else {"executor": executor})}
    marker = InProgress(run_dir)
    crashed = marker.get()
    if crashed is not None and crashed not in done:
        then = ("it runs again now, isolated" if config.isolate else
                f"hint: attnbench sweep --resume {run_dir} --isolate (each case in a subprocess, so a crash "
                "becomes a row)")
        _log(False, f"warning: case {crashed} was in progress when the run stopped (a crash?); {then}")
    try:
        _pin_allocator(meta, config, quiet)  # before anything is timed (workers pin their own)
        if ray_exec:  # per node, on the node, as its cases will run (run.json "nodes")
            ray_exec.measure_nodes(meta, "resume" if resume else "start")
        elif not meta["ceilings_flops_per_s"] or (resume and todo):  # at the start, and again on resume
            _keep_best_ceilings(meta, measure_ceilings(config, quiet), "resume" if resume else "start")
        if todo and not ray_exec:
            meta["calibration"].append(calibrate(config.device, "resume" if resume else "start"))
        meta["status"] = "running"
        write_json(run_dir / RUN_JSON, meta)
        return _run_cases(run_dir, meta, config, cases, todo, rows, journal, marker, ray_exec, quiet)
    finally:
        if ray_exec:
            ray_exec.close()


def _pin_allocator(meta: dict, config: SweepConfig, quiet: bool) -> None:
    """Pin the host allocator as the sweep asks; run.json's ``allocator`` keeps the start's state, and
    a resume whose state differs (pinned elsewhere, another malloc) is warned about and recorded."""
    now = pin_allocator(config.allocator)
    if now["allocator"] != config.allocator:
        _log(False, f"warning: asked for --allocator {config.allocator}, but the host allocator is "
                    f"{now['allocator']} ({now['reason']}); times of cells with big temporaries may differ")
    before = meta.get("allocator")
    if before is None:
        meta["allocator"] = now
    elif before.get("allocator") != now["allocator"]:
        _log(False, f"warning: this run started with the host allocator {before.get('allocator')}, its rest runs "
                    f"with {now['allocator']} ({now['reason']})")
        meta.setdefault("resumes", []).append({"at": time.time(), "allocator": now})


def _check_executor(executor: str, ray_address: str | None, ray_cpus_per_case: int | None) -> None:
    if executor not in ("local", "ray"):
        raise InputError(f"unknown executor {executor!r}; valid executors: local, ray")
    if executor != "ray" and (ray_address is not None or ray_cpus_per_case is not None):
        flag = "--ray-address" if ray_address is not None else "--ray-cpus-per-case"
        raise InputError(f"{flag} applies to the Ray executor only; hint: add --executor ray")


def _check_rounds(executor: str, config: SweepConfig) -> None:
    if executor == "ray" and config.rounds > 1:
        raise InputError(f"--rounds {config.rounds} applies to the local executor only (a Ray run measures each cell "
                         "once); hint: drop --rounds, or run without --executor ray")


def _run_cases(run_dir, meta, config, cases, todo, rows, journal, marker, ray_exec, quiet) -> Path:
    def record(case: Case, metrics: dict, wall_s: float) -> None:
        row = make_row(meta["run_id"], case, metrics, config.isolate, wall_s)
        journal.append(row)
        rows.append(row)

    done = len(cases) - len(todo)
    runner = (Isolated if config.isolate else InProcess)(config, meta["ceilings_flops_per_s"])
    progress = Progress(len(cases), done, quiet or ray_exec is not None)  # Ray: plain lines of its own
    started = time.perf_counter()
    try:
        if ray_exec:  # rows arrive as tasks finish; this process stays the only writer of the journal
            ray_exec.run(todo, meta, record, len(cases), done)
        for case in todo if not ray_exec else ():
            progress.show(case)
            marker.set(case.id)
            t0 = time.perf_counter()
            record(case, runner.metrics(case), time.perf_counter() - t0)
            progress.advance()
        progress.close()  # one live bar at a time: the rounds show their own
        if _local(meta):  # not for a Ray run, even a resume with nothing left to send
            by_id = {c.id: c for c in cases}
            _more_rounds(rows, by_id, runner, record, config.rounds, meta, quiet)
            _remeasure_suspects(rows, by_id, runner, record, meta, quiet)
            _measure_end(meta, rows, config, quiet)
            _recheck_flagged(rows, by_id, runner, record, meta, config, quiet,
                             recheck_wait_budget_s(config, time.perf_counter() - started))
    except KeyboardInterrupt:
        progress.close()
        journal.close()
        marker.clear()  # interrupted, not crashed
        _finish(run_dir, meta, rows, "interrupted", config, quiet)
        _log(False, f"interrupted: {len(rows)} of {len(cases)} cases saved in {run_dir}; "
                    f"finish with: attnbench sweep --resume {run_dir}")
        raise
    progress.close()
    journal.close()
    marker.clear()
    _finish(run_dir, meta, rows, "complete", config, quiet, ray_exec)
    return run_dir


def _best_cal(meta: dict, rows: list[dict], row: dict) -> float | None:
    """The run's best calibration so far, among those timed on ``row``'s torch threads."""
    threads = row.get("torch_threads")
    return best_calibration(meta, rows, int(threads) if isinstance(threads, (int, float)) else None)


def _supersede(rows: list[dict], i: int, record, case: Case, metrics: dict, t0: float) -> None:
    """Journal a new measurement of ``rows[i]``'s cell (timed from ``t0``); the new row, appended by
    ``record``, takes the old one's place."""
    record(case, metrics, time.perf_counter() - t0)
    rows[i] = rows.pop()


def _more_rounds(rows: list[dict], by_id: dict, runner, record, rounds: int, meta: dict, quiet: bool) -> None:
    """Rounds 2..``rounds``: every ok cell measured again, one round after another, the fastest round
    kept, or a clean one that agrees with it (harness.analysis.rounds). Each new row (``remeasured_for``
    "round k") supersedes the cell's row in the journal, so Ctrl-C keeps finished rounds and a resume
    measures only the cells still short."""
    for k in range(2, rounds + 1):
        due = [i for i, r in enumerate(rows) if r.get("status") == "ok" and rounds_done(r) < k]
        if not due:
            continue
        _log(quiet, f"round {k} of {rounds}: measuring {len(due)} cell(s) again")
        progress = Progress(len(due), 0, quiet)
        for i in due:
            case = by_id[rows[i]["case_id"]]
            progress.show(case)
            t0 = time.perf_counter()
            metrics = merge_round(rows[i], runner.metrics(case), _best_cal(meta, rows, rows[i]))
            _supersede(rows, i, record, case, {**metrics, "remeasured_for": f"{ROUND_PREFIX}{k}"}, t0)
            progress.advance()
        progress.close()


def _remeasure_suspects(rows: list[dict], by_id: dict, runner, record, meta: dict, quiet: bool) -> None:
    """Cross-cell checks once every cell exists: each cell suspected of a slow measurement (a fwd
    slower than its own fwd_bwd; a time that drops more than 2x at the next length) is measured
    again. The new row (``remeasured_for``: the check) supersedes the old one and keeps the faster of
    the two measurements (load only ever adds time), or, for a cell measured in rounds, counts the new
    measurement as one more round; ``assess`` then flags what is still suspect."""
    suspects = cross_suspects(rows)
    if suspects:
        _log(quiet, f"re-measuring {len(suspects)} cell(s) a cross-cell check suspects")
    for i, reason in sorted(suspects.items()):
        old, case = rows[i], by_id[rows[i]["case_id"]]
        t0 = time.perf_counter()
        metrics = runner.metrics(case)
        attempts = int(old.get("attempts") or 1) + int(metrics.get("attempts") or 1)
        # Measured in rounds: one more round, like the others; else the faster of the two.
        metrics = (merge_round(old, metrics, _best_cal(meta, rows, old)) if rounds_done(old) > 1
                   else keep_faster(old, metrics))
        _supersede(rows, i, record, case, {**metrics, "attempts": attempts, "remeasured_for": reason},
                   t0)


def _above_ceiling(rows: list[dict], ceilings: dict) -> int:
    return sum(1 for r in rows if r.get("status") == "ok"
               and (_against(r, ceilings).get("ceiling_fraction") or 0) > CEILING)


def _measure_end(meta: dict, rows: list[dict], config: SweepConfig, quiet: bool) -> None:
    """The end's calibration and ceilings (the best ceiling of the run is kept). A ceiling measured while
    the machine was busy reads low, and every cell timed in a quiet moment then reads "above ceiling":
    while cells are above the best ceiling, it is measured again (up to ``retries`` times), each time
    after waiting for the calibration kernel to come back near the run's best."""
    meta["calibration"].append(calibrate(config.device, "end"))
    _keep_best_ceilings(meta, measure_ceilings(config, quiet), "end")
    wait = QuietWaiter()
    for _ in range(config.retries):
        above = _above_ceiling(rows, meta["ceilings_flops_per_s"])
        if not above:
            break
        _log(quiet, f"{above} cell(s) above the matmul ceiling: measuring it again once the machine is quiet")
        wait(config.device, best_calibration(meta, rows, torch.get_num_threads()))
        _keep_best_ceilings(meta, measure_ceilings(config, quiet), f"end, again: {above} cell(s) above it")


def _recheck_flagged(rows: list[dict], by_id: dict, runner, record, meta: dict, config: SweepConfig,
                     quiet: bool, wait_s: float = 0.0) -> None:
    """Flag, re-measure, then flag what is still suspect, once more at the end: a cell its own evidence
    still flags (noisy, host busy, slow calibration, above the best ceiling, an unreproduced round, ...)
    after its retries, rounds and cross-cell checks is measured again, after waiting for the calibration
    kernel to come back near the run's best, as one more round (``merge_round``: the fastest round kept,
    or a clean one that agrees with it; ``remeasured_for`` "round k (recheck: ...)"), up to ``retries``
    times while it stays flagged. Its measurements must then agree with each other, or the row is
    flagged "unreproduced". Each pass judges every cell afresh: a re-check can lower the run's best
    calibration, so a cell it leaves "slow machine" by a hair is re-checked in the next pass too.
    Not with ``--retries 0``; rows re-checked before a resume are not again.
    Once a wait for quiet has run out (the machine stays slow), a cell whose only flag is "slow machine"
    is skipped when its single probe finds the machine still slow: measuring it again could not clear the
    flag (a probe that finds it quiet ends the skipping). Before that, the waits may go on, ``wait_s`` in
    all (``recheck_wait_budget_s``: ``--recheck-wait-s``), until the machine comes back: a VM's slow spells
    last a minute or two, and a cell measured once it is back can be trusted. ``meta["recheck_wait"]``
    records the budget and the time waited (``_finish`` moves it into run.json's ``trust``)."""
    ceilings = meta["ceilings_flops_per_s"]

    def flagged(i: int) -> list[str]:
        flags = row_flags(_against(rows[i], ceilings), _best_cal(meta, rows, rows[i])) or []
        return sorted({flag_name(f) for f in flags})

    candidates = [i for i, r in enumerate(rows)
                  if r.get("status") == "ok" and RECHECK not in str(r.get("remeasured_for") or "")]
    wait = QuietWaiter(wait_s, log=lambda msg: _log(quiet, msg))
    rechecks = dict.fromkeys(candidates, 0)
    try:
        for attempt in itertools.count(1):  # each cell re-checked up to `retries` times; a pass per round of them
            due = [(i, names) for i in candidates
                   if rechecks[i] < config.retries and worth_remeasuring(names := flagged(i))]
            if not due:
                return
            _log(quiet, f"re-checking {len(due)} cell(s) their own evidence still flags (pass {attempt}; a cell at "
                        f"most {config.retries} time(s))")
            progress, skipped = Progress(len(due), 0, quiet), 0
            for i, names in due:
                rechecks[i] += 1
                old, case = rows[i], by_id[rows[i]["case_id"]]
                progress.show(case)
                best, slow_only = _best_cal(meta, rows, old), wait.missed and names == [SLOW_MACHINE]
                t0 = time.perf_counter()
                with torch_threads(case.threads):
                    quiet_now = wait(case.device, best)  # once a wait ran out, a single probe
                if slow_only and not quiet_now:  # the machine stays slow: measuring again could not clear the flag
                    skipped += 1
                    progress.advance()
                    continue
                metrics = merge_round(old, runner.metrics(case), best)
                label = f"{ROUND_PREFIX}{rounds_done(old) + 1} {RECHECK}{', '.join(names)})"
                _supersede(rows, i, record, case, {**metrics, "remeasured_for": label}, t0)
                progress.advance()
            progress.close()
            if skipped:
                _log(quiet, f"{skipped} cell(s) flagged only '{SLOW_MACHINE}' not re-checked: the machine stayed slow "
                            f"(a wait for quiet ran out), so measuring again could not clear them")
    finally:  # Ctrl-C too: the time waited is part of the run's story
        if wait.waited_s:
            meta["recheck_wait"] = {"budget_s": round(wait_s, 1), "waited_s": round(wait.waited_s, 1)}


def _local(meta: dict) -> bool:
    """The run's cases are measured here (not by Ray nodes, whose machines differ)."""
    return (meta.get("execution") or {}).get("executor") != "ray"


def _finish(run_dir: Path, meta: dict, rows: list[dict], status: str, config: SweepConfig, quiet: bool,
            ray_exec=None) -> None:
    if status == "complete" and ray_exec:
        ray_exec.measure_nodes(meta, "end")
    if _local(meta):  # against the best ceilings so far (the end's: _measure_end)
        rows = [_against(row, meta["ceilings_flops_per_s"]) for row in rows]
    rows = assess(rows, meta)  # time_trusted and time_flags, from the evidence beside each row
    write_tables(run_dir, rows)
    counts = Counter(r["status"] for r in rows)
    # The end-of-run re-check's waits for quiet (this session's, or a run's before its resume) are part of its trust.
    waited = meta.pop("recheck_wait", None) or (meta.get("trust") or {}).get("recheck_wait")
    meta.update(status=status, finished_at=time.time(), counts=dict(counts), trust=trust_summary(rows))
    if waited:
        meta["trust"]["recheck_wait"] = waited
    write_json(run_dir / RUN_JSON, meta)
    for s in STATUSES:
        if counts.get(s):
            _log(quiet, f"{s:>12}: {counts[s]}")


def _keep_best_ceilings(meta: dict, measured: dict, when: str) -> None:
    """Record a measurement of the ceilings and keep the best of all (a busy machine only lowers them).
    The dict is updated in place: the runner measuring the re-checks holds it."""
    meta.setdefault("ceilings_measured", []).append({"when": when, "at": time.time(), **measured})
    if not isinstance(meta.get("ceilings_flops_per_s"), dict):
        meta["ceilings_flops_per_s"] = {}
    best = meta["ceilings_flops_per_s"]
    for key, value in measured.items():
        if value and value > (best.get(key) or 0):
            best[key] = value


def _against(row: dict, ceilings: dict) -> dict:
    """A row's ceiling fractions recomputed against the run's best ceilings (start, resume, end)."""
    out = dict(row)
    flops = ceilings.get(row.get("dtype"))
    if flops and row.get("flops_per_s"):
        out.update(ceiling_flops_per_s=flops, ceiling_fraction=row["flops_per_s"] / flops)
    bandwidth = ceilings.get(BANDWIDTH_KEY)
    if bandwidth and row.get("bytes_per_s"):
        out.update(bandwidth_bytes_per_s=bandwidth, bandwidth_fraction=row["bytes_per_s"] / bandwidth)
    return out


def _resumed_config(run_dir: Path, meta: dict, options: dict, quiet: bool) -> SweepConfig:
    """The run's stored sweep with the execution options changed by ``options``; each change is logged
    and recorded in run.json's ``resumes``."""
    stored = meta["sweep"]
    try:  # the rest of a run measures as its start did
        config = build_config({**BEFORE_KEYS, **stored, **options})
    except InputError as exc:
        raise InputError(f"cannot resume {run_dir}: {exc}") from None
    now = json.loads(json.dumps(config.to_dict()))
    default = SweepConfig()  # a key a run from before it existed does not store had its default
    changed = {k: [stored.get(k, getattr(default, k)), now[k]] for k in EXECUTION_KEYS
               if stored.get(k, getattr(default, k)) != now[k]}
    if changed:
        meta["sweep"] = now
        meta.setdefault("resumes", []).append({"at": time.time(), "changed": changed})
        _log(quiet, "resuming with " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    return config


def _check_resumable(run_dir: Path, config: SweepConfig | None) -> dict:
    meta = read_meta(run_dir, "cannot resume")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"cannot resume {run_dir}: schema_version {meta.get('schema_version')!r}, "
                         f"this attnbench writes {SCHEMA_VERSION}; hint: start a new run")
    damaged = [k for k, kind in (("run_id", str), ("calibration", list), ("ceilings_flops_per_s", dict))
               if not isinstance(meta.get(k), kind)]
    if damaged:
        raise InputError(f"cannot resume {run_dir}: its {RUN_JSON} lacks a valid {', '.join(damaged)}; the run "
                         "folder is damaged. Hint: start a new run")
    if config is not None:
        given, stored = json.loads(json.dumps(config.to_dict())), {**BEFORE_KEYS, **meta["sweep"]}
        skip = (*EXECUTION_KEYS, *IGNORED_ON_RESUME)
        diff = [k for k in dict.fromkeys([*stored, *given]) if k not in skip and stored.get(k) != given.get(k)]
        if diff:
            raise InputError(f"cannot resume {run_dir}: its sweep differs from the one given ({', '.join(diff)}); "
                             "hint: resume with --resume DIR alone (execution options such as --isolate, "
                             "--timeout-s and --budget-s may change), or start a new run")
    stored_env = environment_fingerprint(meta["provenance"])
    here = environment_fingerprint(provenance(meta["provenance"].get("device") or meta["sweep"].get("device", "cpu")))
    diff = {k: (stored_env[k], here[k]) for k in stored_env if stored_env[k] != here[k]}
    if diff:
        detail = ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in diff.items())
        raise InputError(f"cannot resume {run_dir}: the environment differs ({detail}); its numbers would not "
                         "be comparable. Hint: start a new run")
    return meta
