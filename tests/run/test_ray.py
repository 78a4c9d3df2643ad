"""The Ray executor on a real local Ray instance (this machine's CPUs, two workers with
--ray-cpus-per-case 1): the same rows as the local executor, a worker that dies is a row, kill -9 of
the driver then --resume loses only the cases in flight. Bad input is one line before any case is sent."""

import json
import os
import platform
import signal
import subprocess
import sys
import time

import pytest

from harness.cli.main import main
from harness.core.errors import InputError
from harness.run.config import expand
from harness.run.validate import build_config
from harness.run.sweep import run_sweep
from harness.store.load import load_run
from harness.store.schema import COLUMNS, JOURNAL

ray = pytest.importorskip("ray", reason="Ray is not installed; pip install -e '.[ray]' (the test extra pulls it)")

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs for two Ray workers")

SMALL = dict(variants=["naive", "chunked", "local"], patterns=["global", "local"], causal=[False, True],
             seq_lens=[64], heads=[2], batch=[1], head_dims=[16], dtypes=["float32"], passes=["fwd"], window=8,
             budget_s=0.01, timeout_s=60, device="cpu", retries=0, ceiling_retries=0, recheck_retries=0, short_rounds=1)


def _ray_processes_of(session: int) -> None:
    """Ray leaves agents behind when its driver is killed -9; end those of this test's session."""
    try:
        os.killpg(session, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def test_ray_rows_match_local(tmp_path, capsys):
    config = build_config(SMALL)
    local = run_sweep(config, out=tmp_path / "local", quiet=True)
    remote = run_sweep(config, out=tmp_path / "ray", quiet=False, executor="ray", ray_cpus_per_case=1)
    assert "ray: each cell is measured once, on its node" in capsys.readouterr().err  # what it leaves out, said
    (a, meta_a), (b, meta_b) = load_run(local), load_run(remote)
    assert list(a.columns) == list(b.columns) == COLUMNS
    key = ["case_id", "status"]
    assert a[key].sort_values("case_id").values.tolist() == b[key].sort_values("case_id").values.tolist()
    assert len(b) == len(expand(config)) and b["case_id"].is_unique
    assert (a["node"] == platform.node()).all() and a["node_id"].isna().all()
    assert (b["node"] == platform.node()).all() and b["node_id"].notna().all() and b["device_name"].notna().all()
    assert meta_a["execution"] == {"executor": "local"}
    assert meta_b["execution"]["executor"] == "ray" and meta_b["execution"]["ray_cpus_per_case"] == 1
    node = meta_b["nodes"][platform.node()]
    assert node["ceilings_flops_per_s"]["float32"] > 0 and node["torch_num_threads"] == 1
    assert [c["when"] for c in node["calibration"]] == ["start", "end"]
    # Every worker judges its samples against its node's start calibration, its first case's too.
    timed = b[b["status"] == "ok"]["time_slow"]
    assert len(timed) >= 8 and timed.map(lambda v: v is not None and len(list(v)) > 0).all()
    assert meta_b["ceilings_flops_per_s"] == node["ceilings_flops_per_s"]  # one node: today's keys as they were
    assert not ray.is_initialized()  # the local instance it started is stopped


def test_ray_worker_killed_mid_case_is_an_error_row(tmp_path, misbehave_plugin):
    config = build_config({**SMALL, "variants": ["naive", misbehave_plugin], "patterns": ["global"],
                           "params": {misbehave_plugin: {"mode": "segfault"}}})
    run_dir = run_sweep(config, out=tmp_path / "run", quiet=True, executor="ray", ray_cpus_per_case=1)
    df, meta = load_run(run_dir)
    assert meta["status"] == "complete" and len(df) == len(expand(config)) == 4
    dead = df[df.variant == misbehave_plugin]
    assert (dead["status"] == "error").all()
    assert dead["reason"].str.contains("WorkerCrashedError|died", regex=True).all(), dead["reason"].tolist()
    assert (dead["node"] == platform.node()).all()
    assert (df[df.variant == "naive"]["status"] == "ok").all()


def test_ray_driver_killed_then_resume_loses_only_cases_in_flight(tmp_path, misbehave_plugin):
    run_dir = tmp_path / "run"
    # test_misbehave mode=sleep (0.1 s a call): about 1 s a case, so the driver is killed with cases in flight. One
    # length: no cross-cell check can re-measure a row on a busy machine, so the journal's count is exact.
    sweep = ["--variants", f"naive,{misbehave_plugin}", "--patterns", "global", "--causal", "both", "--seq-lens",
             "32", "--heads", "1,2", "--batch", "1", "--head-dims", "16", "--dtypes", "float32", "--passes", "fwd",
             "--device", "cpu", "--budget-s", "0.01", "--retries", "0", "--ceiling-retries", "0", "--recheck-retries", "0",
             "--short-rounds", "1"]
    cfg = tmp_path / "sleep.toml"
    cfg.write_text(f'[params.{misbehave_plugin}]\nmode = "sleep"\nsleep_s = 0.1\n')
    args = [sys.executable, "-m", "harness", "sweep", "--config", str(cfg), *sweep, "--out", str(run_dir),
            "--quiet", "--executor", "ray", "--ray-cpus-per-case", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        journal = run_dir / JOURNAL
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and len(journal.read_bytes().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        _ray_processes_of(proc.pid)
    before = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    total = 8
    assert 3 <= len(before) < total
    resumed = run_sweep(resume=run_dir, quiet=True)  # with another executor: allowed
    df, meta = load_run(resumed)
    after = [json.loads(line) for line in journal.read_text().splitlines()]
    assert after[:len(before)] == before  # rows written before the kill are kept, not redone
    assert len(after) == len(df) == total and df["case_id"].is_unique  # nothing lost, nothing duplicated
    assert meta["status"] == "complete" and set(df["status"]) == {"ok"}
    assert meta["execution"] == {"executor": "local"} and platform.node() in meta["nodes"]
    assert df["node_id"].notna().sum() == len(before)  # rows measured by Ray name their node id


def test_ray_bad_input_is_one_line_before_any_case(tmp_path, capsys, monkeypatch):
    base = ["sweep", "--variants", "naive", "--patterns", "global", "--causal", "no", "--seq-lens", "32",
            "--passes", "fwd", "--device", "cpu", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a"), "--executor", "ray", "--ray-address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "--ray-address '127.0.0.1:1' is unreachable" in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--out", str(tmp_path / "b"), "--ray-cpus-per-case", "2"]) == 2
    assert "--ray-cpus-per-case applies to the Ray executor only" in capsys.readouterr().err
    assert not (tmp_path / "b" / JOURNAL).exists() and not (tmp_path / "a" / JOURNAL).exists()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main([*base, "--out", str(tmp_path / "c"), "--executor", "ray"]) == 2
    assert "pip install -e '.[ray]'" in capsys.readouterr().err


def test_ray_checks_the_cluster_before_sending_cases(tmp_path):
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:  # an open connection is used as it is, and left open
        with pytest.raises(InputError, match=r"--ray-cpus-per-case 3 is more than any node .*largest: 2 CPUs"):
            run_sweep(build_config(SMALL), out=tmp_path / "a", quiet=True, executor="ray", ray_cpus_per_case=3)
        with pytest.raises(InputError, match="has no GPU for this device=cuda sweep"):
            run_sweep(build_config({**SMALL, "device": "cuda"}), out=tmp_path / "b", quiet=True, executor="ray")
        assert ray.is_initialized()
        assert not (tmp_path / "a" / JOURNAL).exists()
    finally:
        ray.shutdown()
