import os

import pytest
import torch

# Keep the suite deterministic and light on this 2-core machine.
torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _brief_machine_figures(monkeypatch):
    """In-process sweeps measure the machine's ceilings as always, only briefly (0.05 s each, a 32 MiB
    copy), and wait at most 0.5 s for a quiet machine before re-measuring a flagged cell (not 5 s): a
    tiny test sweep's figures and waits would otherwise take longer than its cells. Tests of the waiting
    itself use fake clocks and calibrations."""
    from harness.bench import machine
    from harness.run import quiet

    monkeypatch.setattr(machine.matmul_flops_per_s, "__defaults__", (0.05,))
    monkeypatch.setattr(machine.copy_bytes_per_s, "__defaults__", (0.05, 2**25))
    monkeypatch.setattr(quiet, "QUIET_WAIT_S", 0.5)


@pytest.fixture(scope="session")
def registry():
    from harness.core.registry import discover

    return discover()


def _measured_row(median, n=10, **changes):
    samples = [median] * n
    row = {"status": "ok", "time_s_median": median, "time_s_iqr": 0.0, "time_s_min": median, "time_s_max": median,
           "time_n_samples": n, "time_number_per_sample": 4, "time_noisy": False, "time_samples_s": samples,
           "time_cpu_samples_s": [2 * s for s in samples], "calibration_s": 1e-3, "host_busy": 0.0, "attempts": 1,
           "flops_per_s": 1e9, "ceiling_fraction": 0.5, "bytes_per_s": None, "bandwidth_fraction": None,
           "peak_mem_bytes": 4096, "rel_error": 1e-7}
    return {**row, **changes}


@pytest.fixture(scope="session")
def measured():
    """``measured(median, n=10, **changes)``: the metrics of one clean ok measurement (n equal samples,
    a quiet host, the calibration at 1 ms), as a runner returns them; ``changes`` overrides any field."""
    return _measured_row


FAKE_FLOP_PER_S = 1e6  # far below any real machine's ceiling: a faked row is never "above ceiling"


@pytest.fixture
def fake_measure(monkeypatch, measured):
    """Replaces the measurement the in-process executor makes of each case (``harness.run.executors.measure``)
    with a clean one that takes no time: median ``case.flops / FAKE_FLOP_PER_S`` (so a fwd_bwd is slower
    than its fwd and a longer case slower than a shorter one: no cross-cell check suspects it), equal
    samples, a quiet host and a calibration below any real one. Whatever the machine is doing, no row is
    flagged, so a sweep's re-measurements are exactly the ones its logic plans. Returns the ids of the
    cases measured, in order, one per measurement."""
    from harness.run import executors

    calls = []

    def fake(variant, case, budget_s=0.5, ceiling=None, **_):
        calls.append(case.id)
        median = case.flops / FAKE_FLOP_PER_S
        row = measured(median, calibration_s=1e-9, flops_per_s=FAKE_FLOP_PER_S, ceiling_flops_per_s=ceiling,
                       ceiling_fraction=FAKE_FLOP_PER_S / ceiling if ceiling else None, bytes_per_s=case.bytes / median,
                       reason="")
        del row["attempts"]  # the executor counts its attempts
        return row

    monkeypatch.setattr(executors, "measure", fake)
    return calls


def cuda_only():
    return pytest.mark.skipif(not torch.cuda.is_available(),
                              reason="needs a CUDA device: torch.cuda.is_available() is False here")


MISBEHAVE_SRC = '''
"""A test plug-in whose forward misbehaves on purpose, selected by its `mode` parameter."""
import os
import signal
import time

import torch

from harness.core.registry import Variant, register


@register
class Misbehave(Variant):
    name = "test_misbehave"
    description = ("test plug-in: ok, raise, oom, sleep, hang, stuck or segfault; wrong outputs: nan, float64, "
                   "scaled, cached, precomputed, shape")
    patterns = ("global",)
    default_params = {"mode": "ok", "sleep_s": 0.3}

    def forward(self, q, k, v, pattern, precomputed=None):
        mode = self.params["mode"]
        if mode == "raise":
            raise ValueError("deliberate failure")
        if mode == "oom":
            raise torch.OutOfMemoryError("deliberate out of memory")
        if mode == "alloc":
            return torch.empty(1 << 46, dtype=torch.uint8)  # 64 TiB: the allocator refuses
        if mode == "sleep":
            time.sleep(self.params["sleep_s"])
        if mode == "hang":
            time.sleep(3600)
        if mode == "stuck":  # like a C kernel that never returns: no signal handler runs
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT})
            time.sleep(3600)
        if mode == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if mode == "precomputed":  # the answer for the timed inputs, worked out ahead of time
            return precomputed
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=pattern.causal)
        if mode == "nan":
            return torch.full_like(out, float("nan"))
        if mode == "float64":
            return torch.zeros(out.shape, dtype=torch.float64)
        if mode == "scaled":
            return out * 1.01
        if mode == "shape":
            return out[..., :-1]
        if mode == "cached":  # the first call's output, returned again
            if not hasattr(self, "first"):
                self.first = out.detach()
            return self.first
        return out

    def constants(self, case):
        if self.params["mode"] != "precomputed":
            return {}
        from harness.bench.inputs import make_inputs

        q, k, v = make_inputs(case).qkv()
        return {"precomputed": torch.nn.functional.scaled_dot_product_attention(q, k, v).detach()}
'''


@pytest.fixture(scope="session")
def _misbehave_class(tmp_path_factory):
    """Writes the plug-in as an installed distribution (PYTHONPATH + an entry point, so child processes
    find it) and imports it here once; returns its class, left out of the registry until a module asks."""
    import importlib
    import sys

    from harness.core.registry import REGISTRY, discover

    discover()
    root = tmp_path_factory.mktemp("plugin")
    (root / "attnbench_test_misbehave.py").write_text(MISBEHAVE_SRC)
    dist = root / "attnbench_test_misbehave-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: attnbench-test-misbehave\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[attnbench.variants]\nmisbehave = attnbench_test_misbehave\n")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(root) + (os.pathsep + old if old else "")
    sys.path.insert(0, str(root))
    importlib.import_module("attnbench_test_misbehave")
    cls = REGISTRY.pop("test_misbehave")
    yield cls
    sys.path.remove(str(root))
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def misbehave_plugin(_misbehave_class):
    """The plug-in registered for one test module: tests that sweep every variant elsewhere never see it."""
    from harness.core.registry import REGISTRY

    REGISTRY[_misbehave_class.name] = _misbehave_class
    yield _misbehave_class.name
    REGISTRY.pop(_misbehave_class.name, None)
