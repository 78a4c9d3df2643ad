"""Compiling ahead: the cases of compiling variants (FlexAttention) compiled by worker processes, one
per core, before the first case is timed.

On a CPU, torch.compile builds each shape's kernel with the C++ compiler: about 5 s a shape on this
project's 2-core VM, one after another, while the sweep waits. Compiled in parallel ahead of the
sweep, each shape's code lands in inductor's on-disk cache (its FX graph cache, under
``TORCHINDUCTOR_CACHE_DIR``), and the sweep's own compile of the case (``harness.bench.prepare``,
unchanged) loads it from there in a fraction of a second. Nothing is timed while the workers run.

Only on a CPU, with at least two cores and two such cases, and while inductor's FX graph cache is on
(the default); a case a worker cannot compile is left to the sweep, which makes its failure a row.
The workers ignore Ctrl-C (the sweep's stop handling ends them).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

from harness.core.case import Case
from harness.run.progress import Progress, say

WORKER_ENV = {"TORCHINDUCTOR_COMPILE_THREADS": "1"}  # a worker is one core's work


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def ahead_cases(cases: list[Case], registry: dict) -> list[Case]:
    """The cases worth compiling ahead: those of compiling variants, on a CPU, that the variant runs."""
    out = []
    for case in cases:
        cls = registry.get(case.variant)
        if case.device != "cpu" or cls is None or not getattr(cls, "compiles", False):
            continue
        try:
            if not cls(**dict(case.params)).not_supported_reasons(case):
                out.append(case)
        except Exception:  # noqa: BLE001 - a variant that cannot even say: the sweep reports it
            continue
    return out


def _spawn_pool(workers: int):
    """A spawn pool whose workers ignore Ctrl-C from their very start (an ignored signal stays ignored
    in a child, and Python then installs no handler of its own): a stop is the sweep's to handle."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return multiprocessing.get_context("spawn").Pool(workers)
    finally:
        signal.signal(signal.SIGINT, before)


def _compile(case: Case) -> tuple[str, float, str | None]:
    """In a worker: prepare the case (its warm call compiles it); (case id, seconds, error or None)."""
    from harness.bench.prepare import prepare
    from harness.core.registry import get_variant

    t0 = time.perf_counter()
    try:
        variant = get_variant(case.variant, **dict(case.params))
        with variant.timing_context(case):
            prepare(variant, case)
    except Exception as exc:  # noqa: BLE001 - the sweep compiles it again and records what happens
        return case.id, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"
    return case.id, time.perf_counter() - t0, None


def _as_they_finish(pool, todo: list[Case]):
    """The workers' results as they come, waiting in short timed waits: a signal the pool's threads
    receive then still reaches the main thread's handlers (Ctrl-C, SIGTERM) within a second."""
    results = pool.imap_unordered(_compile, todo)
    for _ in todo:
        while True:
            try:
                yield results.next(timeout=0.5)
                break
            except multiprocessing.TimeoutError:
                continue


def compile_ahead(cases: list[Case], registry: dict, quiet: bool, workers: int | None = None) -> dict:
    """Compile ``cases``' compiling-variant shapes in parallel worker processes (see the module
    docstring). Returns what run.json keeps (``compile_ahead``): cases, workers, seconds, failures;
    an empty dict when nothing was compiled ahead."""
    import torch._inductor.config as inductor_config

    todo = ahead_cases(cases, registry)
    workers = min(workers or cores(), len(todo))
    if workers < 2 or not inductor_config.fx_graph_cache:
        return {}
    say(quiet, f"compiling {len(todo)} case(s) of compiling variants ahead, in {workers} processes "
               "(their kernels then load from torch's cache)")
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)  # spawned workers inherit the environment as it is at their start
    t0, failed, by_id = time.perf_counter(), [], {c.id: c for c in todo}
    progress = Progress(len(todo), 0, quiet)
    pool = _spawn_pool(workers)
    try:
        for case_id, _, error in _as_they_finish(pool, todo):
            progress.show(by_id[case_id])
            progress.advance()
            if error:
                failed.append({"case_id": case_id, "error": error})
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        progress.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {"cases": len(todo), "workers": workers, "seconds": round(time.perf_counter() - t0, 1), "failed": failed}
