"""Stops and writers: SIGTERM and SIGHUP end a sweep as Ctrl-C does (rows saved, nothing blamed, the
resume command printed, exit 128 + the signal); a run folder has one writer at a time, and a killed
writer frees it; a full disk names the file and the resume; list axes refuse empty items."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness.cli.main import main
from harness.core.errors import InputError
from harness.run.sweep import run_sweep
from harness.run.validate import build_config
from harness.store.journal import Journal
from harness.store.load import load_run
from harness.store.lock import RunLock

SLOW = ["sweep", "--variants", "naive", "--patterns", "global", "--seq-lens", "16,24,32,40,48,56",
        "--heads", "1", "--head-dims", "8", "--passes", "fwd", "--causal", "no", "--budget-s", "1", "--quiet"]


def _start(out, *extra):
    return subprocess.Popen([sys.executable, "-m", "harness.cli.main", *SLOW, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(out, n: int, proc, limit_s: float = 240.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if (out / "journal.jsonl").exists() and len(Journal(out / "journal.jsonl").read()) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended early: {proc.stderr.read()}")
        time.sleep(0.2)
    pytest.fail("no rows appeared")


def test_sigterm_saves_rows_blames_nothing_and_prints_the_resume(tmp_path):
    """A real process stopped by SIGTERM mid-sweep: exit 143, rows saved, the resume finishes it."""
    out = tmp_path / "run"
    proc = _start(out, "--budget-s", "0.5")
    try:
        _wait_for_rows(out, 1, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and f"attnbench sweep --resume {out}" in err
    assert "Traceback" not in err
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted" and not (out / "in_progress").exists()
    assert len(load_run(out)[0]) >= 1
    finished = run_sweep(resume=out, quiet=True, budget_s=0.01, recheck_retries=0)  # the execution may change
    assert len(load_run(finished)[0]) == 6


def test_sighup_is_a_stop_like_sigterm(tmp_path, capsys, fake_measure, monkeypatch):
    """SIGHUP (a closed terminal) arriving during the second case: exit 129, the first row saved."""
    from harness.run import executors

    measure = executors.measure

    def hang_up_on_the_second(variant, case, *args, **kw):
        if len(fake_measure) == 1:
            os.kill(os.getpid(), signal.SIGHUP)
        return measure(variant, case, *args, **kw)

    monkeypatch.setattr(executors, "measure", hang_up_on_the_second)
    out = tmp_path / "run"
    assert main([*SLOW, "--out", str(out)]) == 129
    err = capsys.readouterr().err
    assert "stopped by SIGHUP" in err and f"attnbench sweep --resume {out}" in err
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert len(load_run(out)[0]) == 1 and not (out / "in_progress").exists()


def test_a_second_writer_is_refused_and_a_killed_holder_frees_the_folder(tmp_path, capsys):
    out = tmp_path / "run"
    proc = _start(out, "--budget-s", "4")  # long enough to outlast what follows
    try:
        _wait_for_rows(out, 1, proc)
        assert main([*SLOW, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"pid {proc.pid}" in err and "another sweep" in err and len(err.strip().splitlines()) == 1
        assert main(["sweep", "--resume", str(out), "--quiet"]) == 2
        assert f"pid {proc.pid}" in capsys.readouterr().err
        assert main(["show", str(out)]) == 0  # readers read while it runs
    finally:
        proc.kill()
        proc.wait()
    RunLock(out).acquire().release()  # the OS freed it: no stale lock to clear by hand


def test_a_full_disk_names_the_file_and_the_resume(tmp_path, monkeypatch):
    def full(self, row):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    monkeypatch.setattr(Journal, "append", full)
    cfg = build_config({"variants": ["naive"], "patterns": ["global"], "seq_lens": [16], "heads": [1],
                        "head_dims": [8], "budget_s": 0.005, "retries": 0})
    with pytest.raises(InputError) as info:
        run_sweep(cfg, out=tmp_path / "run", quiet=True)
    text = str(info.value)
    assert "journal.jsonl" in text and "No space left" in text and f"--resume {tmp_path / 'run'}" in text


def test_tables_are_replaced_whole(tmp_path, monkeypatch):
    """A table that cannot be written leaves the one before it intact (a temporary file and a rename)."""
    import pandas as pd

    from harness.store import load

    rows = [{"run_id": "r", "case_id": "c", "status": "ok"}]
    load.write_tables(tmp_path, rows)
    before = (tmp_path / "results.parquet").read_bytes()

    def torn(self, path, **kw):
        open(path, "wb").write(b"PAR1 torn")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", torn)
    with pytest.raises(OSError) as info:
        load.write_tables(tmp_path, rows * 2)
    assert info.value.filename.endswith("results.parquet")
    assert (tmp_path / "results.parquet").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("argv, words", [
    (["--seq-lens", "64,,128"], ["--seq-lens", "empty item", "'64,,128'"]),
    (["--variants", "naive,"], ["--variants", "empty item"]),
    (["--batch", "2.5"], ["--batch", "'2.5'", "whole numbers only, e.g. --batch 2"]),
    (["--passes", "bwd"], ["unknown pass 'bwd'"]),
])
def test_list_items_and_hints(tmp_path, capsys, argv, words):
    assert main(["sweep", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words) and len(err.strip().splitlines()) == 1, err


def test_an_empty_list_in_toml_names_the_axis(tmp_path, capsys):
    (tmp_path / "c.toml").write_text("seq_lens = []\n")
    assert main(["sweep", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "x")]) == 2
    assert "seq_lens is empty" in capsys.readouterr().err
