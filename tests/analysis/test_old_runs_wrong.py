"""Runs written before the ``wrong`` status (schema 1 to 3) keep their rows' statuses, and report,
compare and show still read them; a schema-4 run with wrong rows compares against an old one."""

import json
import shutil
from pathlib import Path

import pytest

from harness.analysis.compare import compare_runs, summarize
from harness.cli.main import main
from harness.render.report import build_report
from harness.store.load import load_run
from harness.store.schema import RUN_JSON

RUN_V1 = Path(__file__).parent.parent / "store" / "data" / "run_v1"


@pytest.fixture(params=[1, 2, 3])
def old_run(request, tmp_path):
    """The stored schema-1 run, labelled as schema 1, 2 or 3 (the columns each added are NA on load)."""
    path = tmp_path / f"run_v{request.param}"
    shutil.copytree(RUN_V1, path)
    meta = json.loads((path / RUN_JSON).read_text())
    (path / RUN_JSON).write_text(json.dumps({**meta, "schema_version": request.param}))
    return path


def test_old_rows_keep_their_status_and_compare_to_themselves(old_run):
    df, meta = load_run(old_run)
    assert set(df["status"]) == {"ok", "unsupported"}  # no row becomes wrong on load
    result = compare_runs(df, meta, df, meta)
    assert "wrong" not in set(result["verdict"]) and summarize(result)["exit_code"] == 0


def test_report_compare_and_show_read_an_old_run(old_run, tmp_path, capsys):
    out, _ = build_report([old_run], reports_root=tmp_path / "reports")
    assert out.exists() and "wrong output" not in out.read_text()
    assert main(["compare", str(old_run), str(old_run)]) == 0
    assert main(["show", str(old_run)]) == 0
    printed = capsys.readouterr().out
    assert "wrong" not in printed.split("status", 1)[1].split("\n", 1)[0]  # the status table's header


def test_a_new_run_with_a_wrong_row_against_an_old_run(old_run, tmp_path):
    df, meta = load_run(old_run)
    new = df.copy()
    ok = new.index[new["status"] == "ok"]
    new.loc[ok[0], ["status", "reason"]] = ["wrong", "returned 64 non-finite value(s) of 64 (nan or inf)"]
    result = compare_runs(df, meta, new, meta).set_index("case_id")
    case = new.loc[ok[0], "case_id"]
    assert result.loc[case, "verdict"] == "wrong" and "non-finite" in result.loc[case, "reason"]
