"""The host allocator pinned steady: a warmed-up call faults no pages whatever ran before it; the
C library's defaults fault on every call of a kernel with big temporaries. The timing loop reads the
faults beside every block, and a row whose calls fault is flagged."""

import mmap
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from harness.analysis.trust import FAULT_PAGES, row_flags
from harness.bench.heap import _glibc, describe, free_heap_bytes, pin_allocator
from harness.bench.timing import minor_faults, time_callable

GLIBC = _glibc()[0] is not None
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
THP_ALWAYS = THP.exists() and "[always]" in THP.read_text()  # then 64 MiB faults in as 2 MiB pages

# A 64 MiB result, freed and made again, in a fresh process: faults per call once warmed up (glibc's heap
# settles after a few calls: small allocations between the big ones fragment it until then; its dynamic
# mmap threshold stops rising at 32 MiB, so the C library's defaults map this one afresh every call).
PROBE = textwrap.dedent("""
    import resource, sys, torch
    from harness.bench.heap import pin_allocator
    print(pin_allocator(sys.argv[1])["allocator"])
    x = torch.randn(4096, 4096)
    for _ in range(16):
        x.exp()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        x.exp()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
""")


def _faults_per_call(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc is not the process's (another OS, or a preloaded malloc)")
@pytest.mark.skipif(THP_ALWAYS, reason="transparent huge pages always on: fresh memory faults per 2 MiB, not 4 KiB")
def test_steady_keeps_freed_memory_and_system_faults_it_in_again():
    mode, steady = _faults_per_call("steady")
    assert mode == "steady" and steady < 64  # 64 MiB is 16384 pages: none of them faulted again
    mode, system = _faults_per_call("system")
    assert mode == "system" and system > 8192  # mapped afresh and faulted in on every call


def test_pin_allocator_reports_what_it_did_and_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="'jemalloc'"):
        pin_allocator("jemalloc")
    done = pin_allocator("steady")
    assert done["allocator"] in ("steady", "system") and done["reason"]
    if GLIBC:
        assert done["allocator"] == "steady" and done["malloc"].startswith("glibc")
        later = pin_allocator("system")  # thresholds cannot be restored: it says so
        assert later["allocator"] == "steady" and "earlier in this process" in later["reason"]
    assert describe(done).startswith(done["allocator"]) and describe(None).startswith("system (not recorded")


@pytest.mark.skipif(minor_faults() is None, reason="no getrusage here")
@pytest.mark.skipif(THP_ALWAYS, reason="transparent huge pages always on: fresh memory faults per 2 MiB, not 4 KiB")
def test_the_wall_clock_reads_page_faults_per_sample_and_an_injected_clock_none():
    """A call that maps 256 fresh pages and touches each faults 256 times, whatever malloc is in use;
    a call that touches nothing new faults about never."""
    pages = 256

    def fresh_pages():
        with mmap.mmap(-1, pages * mmap.PAGESIZE) as m:
            for i in range(0, len(m), mmap.PAGESIZE):
                m[i] = 1
    t = time_callable(fresh_pages, "cpu", budget_s=0.02, min_samples=5)
    assert t.fault_samples is not None and len(t.fault_samples) == len(t.samples_s)
    assert all(pages <= f < pages + 16 for f in t.fault_samples) and t.fields()["time_fault_samples"] == t.fault_samples
    x = torch.randn(64, 64)
    t = time_callable(lambda: x @ x, "cpu", budget_s=0.02, min_samples=5)
    assert sorted(t.fault_samples)[len(t.fault_samples) // 2] < 1
    now = [0.0]

    def fake_clock():
        now[0] += 1e-3
        return now[0]
    assert time_callable(lambda: None, "cpu", budget_s=0.02, timer=fake_clock).fault_samples is None


def _row(**kw):
    return {"status": "ok", "calibration_s": 1e-3, "host_busy": 0.0, "time_s_median": 1e-3, "time_s_iqr": 0.0,
            "time_n_samples": 10, "time_number_per_sample": 1, "time_samples_s": [1e-3] * 10, **kw}


def test_a_row_whose_calls_fault_is_flagged_on_its_clean_samples():
    assert row_flags(_row(time_fault_samples=[0.0] * 10), 1e-3) == []
    flags = row_flags(_row(time_fault_samples=[8000.0] * 10), 1e-3)
    assert len(flags) == 1 and flags[0].startswith("page faults: 8000 per call") and "--allocator steady" in flags[0]
    # the contended samples are left out, as for the time: here the clean ones did not fault
    mixed = _row(time_fault_samples=[9000.0] * 6 + [0.0] * 4, time_contended=[True] * 6 + [False] * 4)
    assert not [f for f in row_flags(mixed, 1e-3) if f.startswith("page faults")]
    assert row_flags(_row(time_fault_samples=[FAULT_PAGES] * 10), 1e-3) == []  # at the limit: not above it


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc is not the process's (another OS, or a preloaded malloc)")
def test_memory_a_steady_heap_keeps_counts_as_free_and_a_sweep_warns_when_its_allocator_differs(tmp_path, capsys):
    from harness.run.validate import build_config
    from harness.run.sweep import run_sweep
    from harness.store.load import load_run

    pin_allocator("steady")
    x = torch.ones(16 * 2**20)  # 64 MiB from the heap (no mmap once pinned), then freed into it
    held = free_heap_bytes()
    del x
    assert free_heap_bytes() >= held + 60 * 2**20
    tiny = dict(variants=["naive"], patterns=["global"], seq_lens=[16], heads=[1], head_dims=[8], budget_s=0.01,
                retries=0, ceiling_retries=0, recheck_retries=0, allocator="system")
    _, meta = load_run(run_sweep(build_config(tiny), out=tmp_path / "run", quiet=True))
    assert meta["sweep"]["allocator"] == "system" and meta["allocator"]["allocator"] == "steady"
    assert "asked for --allocator system, but the host allocator is steady" in capsys.readouterr().err


def test_the_modules_the_gate_worker_loads_by_path_import_nothing_from_attnbench():
    """The worker runs with the tree under test on PYTHONPATH, which may predate these modules: an
    import of harness from them would reach into that tree (or fail there)."""
    import ast

    import harness.bench.heap
    import harness.bench.memory
    import harness.bench.timing
    import harness.run.protocol

    for module in (harness.bench.heap, harness.bench.memory, harness.bench.timing, harness.run.protocol):
        tree = ast.parse(Path(module.__file__).read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] in ("harness", "variants")], module.__file__
