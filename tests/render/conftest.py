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


# ---- fidelity (quality versus cost) -----------------------------------------------------------
SMOLLM2 = "smollm2:0123456789ab"
# (pattern, parameters, {variant: (time_s, peak bytes)}, error on random inputs, on smollm2 layer 0)
FIDELITY_CONFIGS = [
    ("global", {}, {"naive": (4e-3, 8e6), "sdpa": (2e-3, 3e6)}, 0.0, 0.0),
    ("local", {"window": 128}, {"naive": (3e-3, 7e6), "local": (5e-4, 1e6)}, 0.20, 0.030),
    ("local", {"window": 512}, {"local": (1e-3, 2e6)}, 0.08, 0.008),
    ("sink", {"window": 128, "sinks": 4}, {"local": (6e-4, 1.1e6)}, 0.19, 0.009),
    ("topk", {"topk": 64}, {"naive": (2.5e-3, 6e6)}, 0.15, 0.020),
]


def fidelity_rows(inputs=("random", SMOLLM2), layers=(0, 1), n=1024, configs=None, variant_names=None):
    """Tidy rows with the fidelity columns: per input source (smollm2 per layer, its error growing with
    the layer: layer 1's is 1.5x layer 0's) and configuration of ``FIDELITY_CONFIGS``, one ok row per
    variant, trusted; global rows carry no fidelity values (NA), as the runner writes them.
    ``variant_names`` renames variants (to test escaping)."""
    rows = []
    for source in inputs:
        for layer in ([None] if source == "random" else layers):
            for pattern, params, variants, err_random, err_model in (configs or FIDELITY_CONFIGS):
                err = err_random if source == "random" else err_model * (1 + 0.5 * layer)
                for variant, (time_s, mem) in variants.items():
                    name = (variant_names or {}).get(variant, variant)
                    row = make_row(name, n, pattern=pattern, time_s=time_s, mem=mem)
                    tag = "-".join(f"{k}{v}" for k, v in params.items())
                    row.update({"window": None, "segment": None, **params,
                                "case_id": f"{name}/{pattern}{tag}/{source}/{layer}/{n}",
                                "inputs": source, "inputs_layer": layer, "time_trusted": True, "time_flags": ""})
                    for col in ("sinks", "stride", "globals", "topk"):
                        row.setdefault(col, None)
                    if pattern != "global":
                        row.update(fidelity_out_rel_error=err, fidelity_out_rel_error_p50=err * 0.9,
                                   fidelity_out_rel_error_p90=err * 1.3, fidelity_mass_dropped=err / 2,
                                   fidelity_mass_dropped_p90=err * 0.7, fidelity_kl=err / 3,
                                   fidelity_topk_out_rel_error=err / 4,
                                   fidelity_ppl=None if source == "random" else 12.0 + 40 * err, fidelity_rows=256)
                    rows.append(row)
    return rows


def write_fidelity_run(run_dir: Path, rows: list[dict], perplexity: float | None = 12.0) -> Path:
    """A run folder whose results.parquet keeps the columns the schema does not list yet (inputs,
    pattern parameters, fidelity), with the dense perplexity in run.json's ``inputs``."""
    import json

    from harness.store.schema import rows_to_frame

    write_fixture_run(run_dir, rows)
    rows = [{**r, "run_id": run_dir.name} for r in rows]
    df = rows_to_frame(rows)
    for col in sorted({c for r in rows for c in r} - set(df.columns)):
        df[col] = [r.get(col) for r in rows]
    df.to_parquet(run_dir / "results.parquet", index=False)
    meta = json.loads((run_dir / RUN_JSON).read_text())
    for key, col in (("window", "window"), ("sinks", "sinks"), ("stride", "stride"), ("globals", "globals"),
                     ("topk", "topk"), ("inputs", "inputs"), ("layers", "inputs_layer")):
        meta["sweep"][key] = sorted({r[col] for r in rows if r.get(col) is not None})
    if perplexity is not None:
        meta["inputs"] = {"id": SMOLLM2, "perplexity": perplexity}
    write_json(run_dir / RUN_JSON, meta)
    return run_dir


@pytest.fixture(name="fidelity_rows", scope="session")
def _fidelity_rows():
    return fidelity_rows


@pytest.fixture(name="write_fidelity_run", scope="session")
def _write_fidelity_run():
    return write_fidelity_run
