"""Compiling ahead: the cases of compiling variants (FlexAttention) compiled by worker processes, one
per core, before the first case is timed.

On a CPU, torch.compile builds each shape's kernel with the C++ compiler: about 5 s a shape on this
project's 2-core VM, one after another, while the sweep waits. Compiled in parallel ahead of the
sweep, each shape's code lands in inductor's on-disk cache (its FX graph cache, under
``TORCHINDUCTOR_CACHE_DIR``), and the sweep's own compile of the case (``harness.bench.prepare``,
unchanged) loads it from there in a fraction of a second. Nothing is timed while the workers run.

Only on a CPU, with at least two cores and two such cases, and while inductor's FX graph cache is on
(the default). It only ever saves time: a case a worker cannot compile, a worker that dies (the pool
is then given up) or a pool that cannot start is left to the sweep, which compiles the case itself
and makes any failure a row. The workers ignore Ctrl-C; a stop ends them.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool

from harness.core.case import Case
from harness.run.progress import Progress, say

WORKER_ENV = {"TORCHINDUCTOR_COMPILE_THREADS": "1"}  # a worker compiles in its own process, no pool of its own
POLL_S = 0.5  # results are awaited in waits this short, so a stop reaches the sweep's handlers within it


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def ahead_cases(cases: list[Case], registry: dict) -> list[Case]:
    """The cases worth compiling ahead: those of compiling variants, on a CPU, that the variant runs
    and that fit in memory (harness.run.footprint; the sweep does not attempt the others)."""
    from harness.run.footprint import memory_shortfall

    out = []
    for case in cases:
        cls = registry.get(case.variant)
        if case.device != "cpu" or cls is None or not getattr(cls, "compiles", False):
            continue
        try:
            if not cls(**dict(case.params)).not_supported_reasons(case) and memory_shortfall(case) is None:
                out.append(case)
        except Exception:  # noqa: BLE001 - a variant that cannot even say: the sweep reports it
            continue
    return out


def _compile(case: Case) -> tuple[str, str | None]:
    """In a worker: prepare the case as the sweep will (its threads, its compile call on the warm
    inputs); (case id, error or None)."""
    from harness.bench.inputs import make_inputs
    from harness.bench.prepare import WARM_SEED, prepare
    from harness.core.registry import get_variant
    from harness.run.executors import torch_threads

    try:
        variant = get_variant(case.variant, **dict(case.params))
        with torch_threads(case.threads), variant.timing_context(case):  # threads: part of inductor's cache key
            prepare(variant, case, inputs=make_inputs(case, seed=WARM_SEED))
    except Exception as exc:  # noqa: BLE001 - the sweep compiles it again and records what happens
        return case.id, f"{type(exc).__name__}: {exc}"
    return case.id, None


def _end_worker(signum, frame) -> None:
    """A worker's SIGTERM (``_end``): release what multiprocessing holds for it, then exit at once."""
    from multiprocessing import util

    util._run_finalizers(0)  # its semaphores, which the resource tracker would otherwise warn about
    os._exit(128 + signum)


def _init_worker() -> None:
    signal.signal(signal.SIGTERM, _end_worker)


def _start(workers: int, todo: list[Case]):
    """A spawn pool with every case submitted. Its workers start (at submit) with Ctrl-C ignored, so
    they never print a traceback for it (an ignored signal stays ignored in a child, and Python then
    installs no handler of its own); a stop is the sweep's to handle."""
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_init_worker)
    main = threading.current_thread() is threading.main_thread()  # signal.signal works there only
    before = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        return pool, [pool.submit(_compile, case) for case in todo]
    finally:
        if main:
            signal.signal(signal.SIGINT, before)


def _end(pool) -> None:
    """Shut the pool down without waiting for a compile in progress: its workers are ended."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # the executor's own, as of 3.8-3.13
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
    pool.shutdown(wait=True)  # its workers gone, the executor's own thread ends and frees its queues


def _results(pending):
    """(case id, error or None) of each compile as it finishes, awaited in waits of ``POLL_S``; a dead
    worker raises BrokenProcessPool here."""
    while pending:
        done, pending = concurrent.futures.wait(pending, timeout=POLL_S, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
            yield future.result()


def compile_ahead(cases: list[Case], registry: dict, quiet: bool, workers: int | None = None) -> dict:
    """Compile ``cases``' compiling-variant shapes in parallel worker processes (see the module
    docstring). Returns what run.json keeps (``compile_ahead``): cases, workers, seconds, the cases
    that failed and, when the pool broke, why; an empty dict when nothing was compiled ahead."""
    from unittest import mock  # patch.dict: the workers' environment, restored after them

    import torch._inductor.config as inductor_config

    todo = ahead_cases(cases, registry)
    workers = min(workers or cores(), len(todo))
    if workers < 2 or not inductor_config.fx_graph_cache:
        return {}
    say(quiet, f"compiling {len(todo)} case(s) of compiling variants ahead, in {workers} processes "
               "(their kernels then load from torch's cache)")
    t0, failed, broken, by_id = time.perf_counter(), [], None, {c.id: c for c in todo}
    progress = Progress(len(todo), 0, quiet)
    pool = None
    with mock.patch.dict(os.environ, WORKER_ENV):  # spawned workers inherit it as it is at their start
        try:
            pool, pending = _start(workers, todo)
            for case_id, error in _results(pending):
                progress.show(by_id[case_id])
                progress.advance()
                if error:
                    failed.append({"case_id": case_id, "error": error})
        except (BrokenProcessPool, OSError) as exc:  # a worker died, or none could start
            broken = f"{type(exc).__name__}: {exc}"
            say(quiet, f"compiling ahead stopped ({broken}): the sweep compiles the rest itself")
        finally:
            if pool is not None:
                _end(pool)
            progress.close()
    out = {"cases": len(todo), "workers": workers, "seconds": round(time.perf_counter() - t0, 1), "failed": failed}
    return {**out, "broken": broken} if broken else out
