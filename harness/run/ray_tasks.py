"""The Ray executor's task side: what runs on a Ray worker (one case's row fields; a node's machine
figures). Kept apart from the driver (``harness.run.ray_executor``) so each stays one job."""

from __future__ import annotations

import json
import os
import time

from harness.core.case import Case

_RUNNERS: dict[str, object] = {}  # one executor per worker process, reused across its tasks


def _runner(config: dict, ceilings: dict):
    from harness.run.executors import InProcess, Isolated
    from harness.run.validate import build_config

    key = json.dumps([config, ceilings], sort_keys=True)
    if key not in _RUNNERS:
        _RUNNERS.clear()
        cfg = build_config(config)
        _RUNNERS[key] = (Isolated if cfg.execution.isolate else InProcess)(cfg, ceilings)
    return _RUNNERS[key]


def _use_cpus(device: str, cpus: int) -> int:
    """Torch threads = the CPUs the task holds (a reused worker keeps the count it started with)."""
    import torch

    if device == "cpu" and cpus > 0:
        torch.set_num_threads(cpus)
    return torch.get_num_threads()


def run_case(config: dict, ceilings: dict, record: dict, cpus: int, calibration: list[dict] | None = None) -> dict:
    """A Ray task: one case's row fields, measured on this worker, plus where and how long. ``calibration``:
    the node's calibration entries (run.json's, timed on this node), so that the worker judges its
    first case's samples against the node's best speed too (``slow``), not only those after it."""
    import ray

    case = Case.from_record(record)
    _use_cpus(case.device, cpus)
    runner = _runner(config, ceilings)
    runner.seed_calibration({"calibration": calibration or []}, [])
    t0 = time.perf_counter()
    metrics = runner.metrics(case)
    metrics["node_id"] = ray.get_runtime_context().get_node_id()
    return {"metrics": metrics, "wall_s": time.perf_counter() - t0}


def node_figures(device: str, dtypes: list[str], cpus: int, ceilings: bool, when: str) -> dict:
    """A Ray task: this node's machine figures (ceilings only when asked), measured like a case runs."""
    import ray

    from harness.run.executors import node_fields
    from harness.run.figures import calibrate, measure_ceilings
    from harness.store.provenance import cpu_model

    threads = _use_cpus(device, cpus)
    out = {**node_fields(device), "node_id": ray.get_runtime_context().get_node_id(), "cpu_model": cpu_model(),
           "cpu_count": os.cpu_count(), "torch_num_threads": threads, "calibration": calibrate(device, when)}
    if ceilings:
        out["ceilings_flops_per_s"] = measure_ceilings(device, dtypes, quiet=True)
    return out
