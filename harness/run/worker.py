"""The subprocess worker of `attnbench sweep --isolate` and `attnbench ci` (protocol: harness.run.protocol).

Run by path, ``python <harness>/run/worker.py``, with the tree under test first on PYTHONPATH. The
timing loop and calibration kernel come from this file's own tree (``bench/timing.py``, loaded by
path), so the two trees a gate compares are timed by the same code; cases, variants and their
preparation are imported from the tree under test.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path.pop(0)  # run by path: this folder is not a package root; the tree under test is on PYTHONPATH


def _own_module(relative: str, name: str):
    """A module of this worker's own tree, loaded by path under a private name."""
    spec = importlib.util.spec_from_file_location(name, HERE.parent / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


PROTOCOL = _own_module("run/protocol.py", "_attnbench_protocol")  # the answer format of this worker's tree
_reply = PROTOCOL.reply


def _files(registry: dict, names) -> dict:
    import harness
    import variants

    return {"harness_file": harness.__file__, "variants_file": variants.__file__,
            "variant_files": {n: sys.modules[registry[n].__module__].__file__ for n in names if n in registry}}


def sweep_mode(job: dict) -> None:
    """Full rows (time, memory, error) of the cases sent, measured by this tree's in-process executor."""
    from harness.core.case import Case
    from harness.core.registry import discover
    from harness.run.executors import InProcess
    from harness.run.validate import build_config

    executor = InProcess(build_config(job["config"]), job.get("ceilings") or {})
    executor.best_calibration.update({int(k): v for k, v in (job.get("best_calibration") or {}).items()})
    executor.best_sync.update({int(k): v for k, v in (job.get("best_sync") or {}).items()})
    _reply({"ready": True, **_files(discover(), [])})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            return
        _reply(executor.metrics(Case.from_record(cmd["case"])))


def _tree_builder():
    """(discover, build(record) -> (fn, context) or a status dict) from the tree under test."""
    import contextlib
    import functools
    import types

    import torch

    import harness

    # Decide by the tree's files, not by trying imports: an editable install of another attnbench
    # would answer for a submodule this tree lacks.
    measure_module = None
    if (Path(harness.__file__).parent / "bench" / "prepare.py").is_file():
        from harness.bench import measure as measure_module
        from harness.bench.prepare import prepare
        from harness.core.case import Case
        from harness.core.registry import discover, get_variant
    else:  # a tree from before the engine (harness/case.py, harness/measure.py)
        from harness.case import Case
        from harness.measure import make_callable, make_inputs
        from harness.registry import discover, get_variant

        def prepare(variant, case):
            variant.prepare(case)
            fn = make_callable(variant, case, make_inputs(case))
            return types.SimpleNamespace(fn=fn, context=contextlib.nullcontext)

    def build(rec: dict):
        registry = discover()
        if rec["variant"] not in registry:
            return {"status": "absent", "reason": f"no variant {rec['variant']!r} in this tree"}
        case = Case.from_record(rec)
        variant = get_variant(rec["variant"], **dict(case.params))
        reasons = variant.not_supported_reasons(case)
        if reasons:
            return {"status": "unsupported", "reason": "; ".join(reasons)}
        torch.manual_seed(0)
        prepared = prepare(variant, case)
        return prepared.fn, prepared.context, functools.partial(error_of, variant, case)

    def error_of(variant, case) -> dict:
        """The forward output's relative error against this tree's float64 reference and, for an
        approximate pattern, its fidelity against global attention (each absent from a tree that lacks it)."""
        if measure_module is None:
            return {}
        out = {"rel_error": measure_module.output_error(variant, case)["rel_error"]}
        if hasattr(measure_module, "fidelity_fields") and case.pattern != "global":
            out["fidelity_out_rel_error"] = measure_module.fidelity_fields(case)["fidelity_out_rel_error"]
        return out

    return discover, build


def gate_mode(job: dict) -> None:
    """Median times of cases (by index into the job's list); when asked (a process's first block of a
    case), also the calibration kernel's time before it, and, in a process of the job's ``extras``
    (deterministic figures: one pair measures them), one warm call's peak memory and the forward error."""
    import torch

    timing = _own_module("bench/timing.py", "_attnbench_gate_timing")
    memory = _own_module("bench/memory.py", "_attnbench_gate_memory")
    _own_module("bench/heap.py", "_attnbench_gate_heap").pin_allocator("steady")  # both trees alike, as a sweep
    torch.set_num_threads(job["threads"])
    # one torch thread: the measuring thread's CPU time; more: the process's
    clock = time.thread_time if job["clock"] == "cpu" and job["threads"] == 1 else timing.CLOCKS[job["clock"]]
    discover, build = _tree_builder()
    registry = discover()
    _reply({"ready": True, **_files(registry, sorted({rec["variant"] for rec in job["cases"]}))})
    built, warm = {}, set()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            return
        i = cmd["case"]
        try:
            if i not in built:
                built[i] = build(job["cases"][i])
            if isinstance(built[i], dict):
                _reply(built[i])
                continue
            fn, context, error_of = built[i]
            device = job["cases"][i]["device"]
            extra = {}
            first = bool(cmd.get("calibrate"))  # the process's first block of this case
            if first:
                extra["calibration_s"] = timing.calibrate(device, job["calibration_budget_s"], timer=clock, warmup=1,
                                                          min_samples=5)["time_s_median"]
            with context():
                t = timing.time_callable(fn, device, job["budget_s"], timer=clock,
                                         warmup=0 if i in warm else 2, min_samples=5)
                if first and job.get("extras", True):  # warm, as in a sweep's row: one call's peak memory
                    extra["peak_mem_bytes"] = memory.peak_memory(fn, device)[0]
            if first and job.get("extras", True):
                extra.update(error_of())
            warm.add(i)
            _reply({"status": "ok", "median_s": t.median, "n": len(t.samples_s), **extra})
        except Exception as exc:  # a failing case is an answer; the worker goes on
            built[i] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}".splitlines()[0]}  # no harness import: the tree may predate it
            _reply(built[i])


def main() -> int:
    line = sys.stdin.readline()
    if not line:
        return 0
    job = json.loads(line)
    {"sweep": sweep_mode, "gate": gate_mode}[job["mode"]](job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
