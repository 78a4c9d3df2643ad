"""The asv suite (harness/asv_bench): generated from the registry and a grid, cheap to import, and a
record -> publish round trip with the current interpreter on a tiny grid (docs/asv.md)."""

from __future__ import annotations

import importlib
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("asv", reason="asv is not installed (it is in the test extra: pip install -e '.[test]')")

import harness.asv_bench.benchmarks as suite_module  # noqa: E402
from harness.core.errors import InputError
from harness.run.config import expand
from harness.run.validate import build_config, load_toml

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = [f"benchmarks.{cls}.{name}" for cls in ("Fwd", "FwdBwd")
              for name in ("time_attention", "track_peak_mem_bytes", "track_flops_per_s")]


GRID_ENV = suite_module.GRID_ENV


@pytest.fixture(scope="module")
def suite():
    """The suite on its default grid, whatever ATTNBENCH_ASV_GRID says in the caller's shell."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(GRID_ENV, raising=False)
        module = suite_module
        if module.GRID["name"] != "asv":
            module = importlib.reload(module)
        yield module


@pytest.fixture(scope="module")
def cache(suite):
    return suite.Fwd().setup_cache()


def test_default_grid_is_the_asv_preset(suite, monkeypatch):
    monkeypatch.delenv(GRID_ENV, raising=False)
    assert suite.GRID == load_toml("asv", is_preset=True)
    assert suite.grid_path() == suite.PRESETS_DIR / "asv.toml"
    assert suite.grid_path("large") == suite.PRESETS_DIR / "default.toml"
    assert suite.grid_path("quick") == suite.PRESETS_DIR / "quick.toml"
    with pytest.raises(InputError, match="names no grid; valid: small, large"):
        suite.grid_path("nope")


def test_suite_cells_are_exactly_the_sweep_cells(suite, cache):
    """asv's parameter grid times the passes == harness.sweep.expand of the same preset: no drift."""
    assert suite.PARAM_NAMES == ["variant", "pattern", "seq_len", "heads"]
    assert set(cache["cells"]) == set(itertools.product(cache["passes"], *suite.PARAMS))
    preset = expand(build_config(load_toml("asv", is_preset=True)))
    assert sorted(c.id for c, _ in cache["cells"].values()) == sorted(c.id for c in preset)


def test_unsupported_cell_raises_not_implemented_with_the_reasons(suite, cache):
    with pytest.raises(NotImplementedError, match=r"pattern=global \(supported: local\)"):
        suite.Fwd().setup(cache, "local", "global", 256, 4)


def test_one_supported_cell_times_and_tracks(suite, cache):
    bench = suite.FwdBwd()
    bench.setup(cache, "naive", "global", 256, 4)
    bench.time_attention(cache, "naive", "global", 256, 4)
    peak = bench.track_peak_mem_bytes(cache, "naive", "global", 256, 4)
    flops_per_s = bench.track_flops_per_s(cache, "naive", "global", 256, 4)
    bench.teardown(cache, "naive", "global", 256, 4)
    assert isinstance(peak, int) and peak > 0
    assert flops_per_s > 0 and math.isfinite(flops_per_s)
    assert suite.FwdBwd.track_peak_mem_bytes.unit == "bytes"
    assert suite.FwdBwd.track_flops_per_s.unit == "flop/s"


def test_import_builds_nothing_and_never_probes_cuda():
    """asv forks every benchmark from a process that imported the suite: no CUDA, no inputs there."""
    code = textwrap.dedent("""
        import torch, harness.bench.inputs as i, harness.bench.prepare as p
        def boom(*a, **k):
            raise AssertionError("called at import")
        torch.cuda.is_available = torch.cuda.device_count = torch.cuda.init = boom
        i.make_inputs = i.make_qkv = p.prepare = boom
        import harness.asv_bench.benchmarks as b
        print(b.grid_path().name, b.PARAMS[2])
    """)
    env = {**os.environ, GRID_ENV: "large"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "default.toml"


def _git_head() -> str | None:
    if shutil.which("git") is None:
        return None
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


TINY_GRID = """
device = "cpu"
variants = ["naive", "local"]
patterns = ["global", "local"]
causal = [false]
seq_lens = [64]
heads = [2]
batch = [1]
head_dims = [32]
dtypes = ["float32"]
passes = ["fwd"]
window = 16
budget_s = 0.01
timeout_s = 60
"""


def test_asv_check_run_and_publish_on_a_tiny_grid(tmp_path):
    """asv check, then record (existing env, --set-commit-hash) and publish, all in temp folders."""
    head = _git_head()
    if head is None:
        pytest.skip(f"{ROOT} is not a git checkout (or git is missing): asv needs a commit to record")
    from asv import util

    conf = util.load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    conf.update(repo=str(ROOT), benchmark_dir=str(ROOT / "harness" / "asv_bench"),
                env_dir=str(tmp_path / "env"), results_dir=str(tmp_path / "results"),
                html_dir=str(tmp_path / "html"))
    conf_path = tmp_path / "asv.conf.json"
    conf_path.write_text(json.dumps(conf))
    (tmp_path / "tiny.toml").write_text(TINY_GRID)
    env = {**os.environ, "HOME": str(tmp_path), GRID_ENV: str(tmp_path / "tiny.toml"),
           "ASV_PYTHONPATH": str(ROOT)}

    def asv(*args: str, timeout: float = 180) -> str:
        cmd = [sys.executable, "-m", "asv", *args, "--config", str(conf_path)]
        out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"{' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out.stdout

    assert "No problems found" in asv("check", "--python=same")
    asv("machine", "--yes", "--machine", "attnbench-test")
    # The forward benchmarks only (each runs in processes of its own): the tiny grid has no fwd_bwd cell,
    # and the FwdBwd classes' grid is tested in-process above.
    asv("run", "--python=same", "--set-commit-hash", head, "--machine", "attnbench-test", "-b", r"^benchmarks\.Fwd\.",
        "-a", "repeat=(1, 3, 0.2)", "-a", "warmup_time=0.01")

    files = list((tmp_path / "results" / "attnbench-test").glob(f"{head[:8]}-existing-*.json"))
    assert len(files) == 1, sorted(p.name for p in (tmp_path / "results").rglob("*"))
    saved = json.loads(files[0].read_text())
    results = {name: dict(zip(saved["result_columns"], row)) for name, row in saved["results"].items()}
    forward = [name for name in BENCHMARKS if name.startswith("benchmarks.Fwd.")]
    assert set(forward) == set(results)
    cells = list(itertools.product(*results["benchmarks.Fwd.time_attention"]["params"]))
    assert cells[0] == ("'naive'", "'global'", "64", "2")
    for name in forward:
        values = dict(zip(cells, results[name]["result"]))
        for cell, value in values.items():
            if cell[:2] == ("'local'", "'global'"):  # unsupported: skipped, never a number
                assert value is None or value != value, (name, cell, value)
            else:
                assert value is not None and value > 0, (name, cell, value)
    units = {k: v["unit"] for k, v in json.loads((tmp_path / "results" / "benchmarks.json").read_text()).items()
             if isinstance(v, dict) and "unit" in v}
    assert units["benchmarks.Fwd.track_peak_mem_bytes"] == "bytes"
    assert units["benchmarks.Fwd.track_flops_per_s"] == "flop/s"
    assert units["benchmarks.Fwd.time_attention"] == "seconds"

    asv("publish")
    index = json.loads((tmp_path / "html" / "index.json").read_text())
    assert set(forward) <= set(index["benchmarks"])
    assert head in index["revision_to_hash"].values()
    assert (tmp_path / "html" / "index.html").is_file()
    assert list((tmp_path / "html" / "graphs").rglob("benchmarks.Fwd.track_peak_mem_bytes.json"))
