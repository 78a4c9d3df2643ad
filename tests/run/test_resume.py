"""Resuming: after an in-process crash (named, with a hint, and finished with --isolate); execution
options may change and are recorded; the cases may not; damaged journals and run.json; --out."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.core.errors import InputError
from harness.run.config import expand
from harness.run.validate import build_config
from harness.run.sweep import run_sweep
from harness.store.load import load_run

TINY = dict(variants=["naive"], patterns=["global"], causal=[False, True], seq_lens=[16], heads=[1], batch=[1],
            head_dims=[8], dtypes=["float32"], passes=["fwd"], budget_s=0.01, timeout_s=60, device="cpu",
            retries=0, ceiling_retries=0, recheck_retries=0, short_rounds=1)  # no re-measurements: which rows a resume runs is what these tests check
TINY_FLAGS = ["--variants", "naive", "--patterns", "global", "--seq-lens", "16", "--heads", "1", "--head-dims", "8",
              "--passes", "fwd", "--budget-s", "0.01", "--quiet"]


def _attnbench(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=timeout)


def _journal(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "journal.jsonl").read_text().splitlines() if x.strip().startswith("{")]


def _as_killed(run: Path, keep: int) -> list[dict]:
    """Make a finished run look like one killed after ``keep`` rows; returns the rows kept."""
    rows = _journal(run)[:keep]
    (run / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = json.loads((run / "run.json").read_text())
    meta["status"] = "running"
    (run / "run.json").write_text(json.dumps(meta))
    (run / "results.parquet").unlink()
    return rows


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run (2 cases) to copy from."""
    return run_sweep(build_config(TINY), out=tmp_path_factory.mktemp("fin") / "run", quiet=True)


@pytest.fixture
def killed(finished, tmp_path) -> tuple[Path, list[dict]]:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run, _as_killed(run, 1)


def test_in_process_segfault_is_named_on_resume_and_isolate_finishes_it(misbehave_plugin, tmp_path, capsys):
    out = tmp_path / "run"
    (tmp_path / "cfg.toml").write_text('device = "cpu"\n[params.test_misbehave]\nmode = "segfault"\n')
    flags = ["--config", str(tmp_path / "cfg.toml"), "--variants", "naive,test_misbehave", "--patterns", "global",
             "--causal", "no", "--seq-lens", "16", "--heads", "1", "--head-dims", "8", "--passes", "fwd",
             "--budget-s", "0.01", "--retries", "0", "--recheck-retries", "0", "--short-rounds", "1", "--quiet"]  # no re-check: the naive row stays as measured
    first = _attnbench("sweep", *flags, "--out", str(out))
    assert first.returncode < 0  # killed by SIGSEGV, in-process
    crashed = [c.id for c in expand(build_config({**TINY, "variants": ["naive", "test_misbehave"], "causal": [False],
                                                  "params": {"test_misbehave": {"mode": "segfault"}}}))][1]
    assert json.loads((out / "in_progress").read_text())["case_id"] == crashed
    assert [r["variant"] for r in _journal(out)] == ["naive"]

    again = _attnbench("sweep", "--resume", str(out), "--quiet")  # in-process again: it crashes again, but says why
    assert again.returncode < 0
    assert f"case {crashed} was in progress when the run stopped (a crash?)" in again.stderr
    assert f"hint: attnbench sweep --resume {out} --isolate" in again.stderr

    assert main(["sweep", "--resume", str(out), "--isolate", "--quiet"]) == 0  # in this process: the crash is a worker's
    err = capsys.readouterr().err
    assert "it runs again now, isolated" in err and "Traceback" not in err
    df, meta = load_run(out)
    assert meta["status"] == "complete" and len(df) == 2 and df["case_id"].is_unique
    row = df.set_index("variant").loc["test_misbehave"]
    assert row.status == "error" and "SIGSEGV" in row.reason and bool(row.isolated)
    assert not bool(df.set_index("variant").loc["naive"].isolated)  # measured before, in-process
    assert meta["sweep"]["isolate"] is True and meta["resumes"][-1]["changed"] == {"isolate": [False, True]}
    assert not (out / "in_progress").exists()


def test_interrupted_or_finished_runs_leave_no_in_progress_marker(finished):
    assert not (finished / "in_progress").exists()


def test_resume_may_change_execution_options_and_records_them(killed, caplog):
    run, kept = killed
    with caplog.at_level(logging.INFO):
        run_sweep(None, resume=run, quiet=True, options={"timeout_s": 30, "budget_s": 0.02, "isolate": True})
    df, meta = load_run(run)
    assert meta["status"] == "complete" and len(df) == 2 and df["case_id"].is_unique
    assert df.set_index("case_id").loc[kept[0]["case_id"], "finished_at"] == pytest.approx(kept[0]["finished_at"])
    assert meta["sweep"]["timeout_s"] == 30 and meta["sweep"]["budget_s"] == 0.02 and meta["sweep"]["isolate"]
    assert meta["resumes"][-1]["changed"] == {"isolate": [False, True], "timeout_s": [60.0, 30.0],
                                              "budget_s": [0.01, 0.02]}
    assert list(df["isolated"]) == [False, True]


def test_resume_accepts_a_config_that_differs_only_in_execution_options(killed):
    run, _ = killed
    same_cases = build_config({**TINY, "isolate": True, "timeout_s": 5, "budget_s": 0.5, "name": "renamed"})
    run_sweep(same_cases, resume=run, quiet=True)
    _, meta = load_run(run)
    assert meta["status"] == "complete" and meta["sweep"]["timeout_s"] == 60  # options change only when asked
    with pytest.raises(InputError, match=r"sweep differs .*\(seq_lens\); hint: .*--isolate"):
        run_sweep(build_config({**TINY, "seq_lens": [32]}), resume=run, quiet=True)


def test_a_run_from_before_the_allocator_key_resumes_as_it_was_measured(killed):
    """Such a run was measured with the C library's defaults: its rest is too (the allocator is how cases
    run, so a config given on resume does not change it; only an execution option would), and run.json
    records what this process's allocator is."""
    run, _ = killed
    meta = json.loads((run / "run.json").read_text())
    del meta["sweep"]["allocator"], meta["allocator"], meta["sweep"]["short_rounds"]
    (run / "run.json").write_text(json.dumps(meta))
    run_sweep(build_config(TINY), resume=run, quiet=True)
    _, meta = load_run(run)
    assert meta["status"] == "complete" and meta["sweep"]["allocator"] == "system"
    assert meta["sweep"]["short_rounds"] == 1  # from before short cells had two rounds: measured once, as it was
    assert meta["allocator"]["allocator"] in ("steady", "system")  # steady when this test process pinned it before


def test_cli_resume_with_execution_flags_only_keeps_the_stored_sweep(killed, capsys):
    run, _ = killed  # made with TINY, not with the default preset's axes
    assert main(["sweep", "--resume", str(run), "--timeout-s", "45", "--budget-s", "0.02", "--quiet"]) == 0
    _, meta = load_run(run)
    assert meta["status"] == "complete" and meta["sweep"]["timeout_s"] == 45 and meta["sweep"]["seq_lens"] == [16]


def test_cli_resume_refuses_an_out_of_another_folder(killed, tmp_path, capsys):
    run, _ = killed
    assert main(["sweep", "--resume", str(run), "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"--out {tmp_path / 'other'}" in err and "hint: drop --out" in err
    assert not (tmp_path / "other").exists() and json.loads((run / "run.json").read_text())["status"] == "running"
    assert main(["sweep", "--resume", str(run), "--out", str(run) + "/", "--quiet"]) == 0  # the same folder is fine


@pytest.mark.parametrize("text", ["{garbage", "[]", '{"schema_version": 2, "sweep": {}}', ""])
def test_cli_resume_with_a_damaged_run_json_is_one_line(killed, capsys, text):
    run, _ = killed
    (run / "run.json").write_text(text)
    assert main(["sweep", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"cannot resume {run}" in err and "hint" in err.lower()


def test_resume_keeps_the_rows_after_a_garbage_line(finished, tmp_path, caplog):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    rows = _as_killed(run, 2)
    lines = (run / "journal.jsonl").read_text().splitlines()
    (run / "journal.jsonl").write_text("\n".join([lines[0], "@@garbage@@", "5", lines[1]]) + "\n")
    with caplog.at_level(logging.WARNING):
        run_sweep(None, resume=run, quiet=True)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("journal.jsonl line 2: skipped" in m for m in msgs) and any("line 3: skipped" in m for m in msgs)
    df, meta = load_run(run)
    assert meta["status"] == "complete" and len(df) == 2
    for r in rows:  # neither row was measured again
        assert df.set_index("case_id").loc[r["case_id"], "finished_at"] == pytest.approx(r["finished_at"])


def test_resume_repairs_a_torn_last_line_and_measures_that_case(killed, caplog):
    run, kept = killed
    with open(run / "journal.jsonl", "a") as fh:
        fh.write('{"run_id": "' + kept[0]["run_id"] + '", "case_id": "naive/glo')
    with caplog.at_level(logging.WARNING):
        run_sweep(None, resume=run, quiet=True)
    assert any("cut off a torn last line" in r.getMessage() for r in caplog.records)
    assert all(line.startswith("{") and line.endswith("}") for line in (run / "journal.jsonl").read_text().splitlines())
    df, meta = load_run(run)
    assert meta["status"] == "complete" and len(df) == 2 and df["case_id"].is_unique


def test_resume_drops_rows_of_another_sweep(killed, tmp_path, caplog):
    run, kept = killed
    other = run_sweep(build_config({**TINY, "seq_lens": [24]}), out=tmp_path / "other", quiet=True)
    foreign = _journal(other)
    outside = {**kept[0], "case_id": kept[0]["case_id"].replace("n16", "n40"), "seq_len": 40}  # same run_id
    with open(run / "journal.jsonl", "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in (*foreign, outside)))
    with caplog.at_level(logging.WARNING):
        run_sweep(None, resume=run, quiet=True)
    (msg,) = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert "dropped 3 rows" in msg and "2 of another run" in msg and "1 of cases outside the run's sweep" in msg
    df, _ = load_run(run)  # the table written on completion has the run's own rows only
    assert len(df) == 2 and set(df["seq_len"]) == {16} and set(df["run_id"]) == {kept[0]["run_id"]}
