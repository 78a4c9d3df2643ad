"""Fixture rows and run folders shared by the report tests: tidy rows as the runner writes them, a
scaling sweep with a known shape, and run folders on disk. Exposed as fixtures, so no test file
imports another."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness.store.journal import write_json
from harness.store.load import write_tables
from harness.store.schema import RUN_JSON, SCHEMA_VERSION

EVIL_VARIANT = "<script>alert(1)</script>"
EVIL_REASON = "needs <b>bold</b> hardware & more"


def make_row(variant, n, *, pattern="global", causal=False, pass_="fwd", status="ok", time_s=None, mem=None,
             reason="", run_id="run-a", device="cpu", dtype="float32", rel_error=1e-6, twin=False):
    """One tidy row as the runner writes it; metrics are None unless status is ok."""
    ok = status == "ok"
    flops = 4.0 * 4 * 64 * n * n
    row = {"run_id": run_id, "case_id": f"{variant}/{pattern}/{causal}/{n}/{pass_}/{dtype}", "variant": variant,
           "pattern": pattern, "causal": causal, "window": 64 if pattern == "local" else None,
           "segment": max(1, round(math.sqrt(n))) if pattern == "hierarchical" else None, "device": device,
           "dtype": dtype, "batch": 1, "heads": 4, "seq_len": n, "head_dim": 64, "pass": pass_, "params": "{}",
           "status": status, "reason": reason, "flops": flops, "isolated": False, "wall_s": 0.1,
           "finished_at": 1.8e9}
    if ok:
        row.update(time_s_median=time_s, time_s_iqr=time_s / 20, time_s_min=time_s * 0.9, time_s_max=time_s * 1.2,
                   time_n_samples=5, time_number_per_sample=1, time_noisy=False, peak_mem_bytes=int(mem),
                   peak_mem_method="fake", flops_per_s=flops / time_s, ceiling_flops_per_s=2e11,
                   ceiling_fraction=flops / time_s / 2e11, rel_error=rel_error, error_seq_len=min(n, 512),
                   error_batch=1, error_heads=4, error_on_twin=twin, setup_s=0.0,
                   time_samples_s=[time_s] * 5)
    return row


def scaling_rows(ns=(256, 512, 1024, 2048), run_id="run-a", device="cpu", dtype="float32", speed=1.0):
    """naive: time ~ N^2 and memory ~ N^2; local: time and memory ~ N, slower than naive below N = 1024;
    naive runs out of memory at the largest N when there are four sizes; xformers is unsupported."""
    rows = []
    for n in ns:
        for pattern in ("global", "local"):
            big = len(ns) >= 4 and n == ns[-1]
            rows.append(make_row("naive", n, pattern=pattern, time_s=1e-9 * n * n / speed, mem=8.0 * n * n,
                                 run_id=run_id, device=device, dtype=dtype, rel_error=2e-6 if n == 512 else 1e-6,
                                 status="oom" if big and pattern == "global" else "ok",
                                 reason="OutOfMemoryError: tried to allocate 4 GiB" if big else ""))
            if pattern == "local":
                rows.append(make_row("local", n, pattern=pattern, time_s=6e-7 * n / speed, mem=4096.0 * n,
                                     run_id=run_id, device=device, dtype=dtype, rel_error=3e-6,
                                     twin=n > 512))
            rows.append(make_row("xformers", n, pattern=pattern, status="unsupported", run_id=run_id,
                                 device=device, dtype=dtype, reason="device=cpu (supported: cuda)"))
    return rows


def write_fixture_run(run_dir: Path, rows: list[dict], run_id: str | None = None, device: str = "cpu",
                      status: str = "complete") -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [{**r, "run_id": run_id or run_dir.name} for r in rows]  # a folder's rows belong to its run
    write_tables(run_dir, rows)
    variants = sorted({r["variant"] for r in rows})
    write_json(run_dir / RUN_JSON, {
        "schema_version": SCHEMA_VERSION, "run_id": run_id or run_dir.name, "status": status,
        "started_at": 1.8e9, "finished_at": 1.8e9 + 95, "counts": {},
        "provenance": {"git_commit": "0" * 40, "git_dirty": False, "torch_version": "2.13.0+cpu",
                       "device": device, "device_name": "Fixture CPU", "python_version": "3.11.7"},
        "sweep": {"device": device, "variants": variants, "patterns": sorted({r["pattern"] for r in rows}),
                  "seq_lens": sorted({r["seq_len"] for r in rows}), "window": 64, "name": "fixture"},
        "calibration": [{"when": "start", "kernel": "matmul_f32_512", "device": device, "time_s_median": 1e-3,
                         "time_s_iqr": 1e-5, "samples_s": [1e-3], "at": 1.8e9},
                        {"when": "end", "kernel": "matmul_f32_512", "device": device, "time_s_median": 1.1e-3,
                         "time_s_iqr": 1e-5, "samples_s": [1.1e-3], "at": 1.8e9 + 95}],
        "ceilings_flops_per_s": {"float32": 2e11},
    })
    return run_dir


def evil_rows() -> list[dict]:
    """The scaling rows plus a variant name and a failure reason that are HTML, to test escaping."""
    rows = scaling_rows()
    rows += [make_row(EVIL_VARIANT, n, time_s=1e-3, mem=1e6) for n in (256, 2048)]
    rows.append(make_row("sdpa_cudnn", 256, status="error", reason=EVIL_REASON))
    return rows


# ---- the same, as fixtures --------------------------------------------------------------------
@pytest.fixture(name="make_row", scope="session")
def _make_row():
    return make_row


@pytest.fixture(name="scaling_rows", scope="session")
def _scaling_rows():
    return scaling_rows


@pytest.fixture(name="evil_rows", scope="session")
def _evil_rows():
    return evil_rows


@pytest.fixture(name="write_fixture_run", scope="session")
def _write_fixture_run():
    return write_fixture_run


@pytest.fixture(name="evil_variant", scope="session")
def _evil_variant():
    return EVIL_VARIANT


@pytest.fixture(name="evil_reason", scope="session")
def _evil_reason():
    return EVIL_REASON
