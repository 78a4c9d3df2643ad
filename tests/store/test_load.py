"""Run folders written by earlier schema versions still load, with the new columns as NA."""

import shutil
from pathlib import Path

import pandas as pd

from harness.cli.main import main
from harness.store.load import load_run
from harness.store.schema import COLUMNS, SCHEMA_VERSION

V1_RUN = Path(__file__).parent / "data" / "run_v1"  # written by the first release (commit e4d6331)


def test_a_version_1_run_loads_with_every_current_column():
    df, meta = load_run(V1_RUN)
    assert meta["schema_version"] == 1 and SCHEMA_VERSION == 5
    assert (df["inputs"] == "random").all() and df["inputs_layer"].isna().all()  # measured on random inputs
    assert df["fidelity_out_rel_error"].isna().all() and isinstance(df["fidelity_rows"].dtype, pd.Int64Dtype)
    assert (df["kv_heads"] == df["heads"]).all() and (df["q_len"] == df["seq_len"]).all() and (df["kv_len"] == df["seq_len"]).all()
    assert list(df.columns[:len(COLUMNS)]) == COLUMNS
    assert set(df["status"]) == {"ok", "unsupported"}
    ok = df[df["status"] == "ok"]
    assert len(ok) == 8 and ok["time_s_median"].notna().all()
    assert df["mask_s"].isna().all() and df["mask_mem_bytes"].isna().all()
    assert isinstance(df["mask_mem_bytes"].dtype, pd.Int64Dtype)


def test_show_and_report_read_a_version_1_run(tmp_path, capsys):
    run = tmp_path / "run_v1"
    shutil.copytree(V1_RUN, run)
    assert main(["show", str(run), "--all"]) == 0
    assert "naive" in capsys.readouterr().out
    assert main(["report", str(run), "--reports-root", str(tmp_path / "reports")]) == 0
    assert (tmp_path / "reports" / "index.html").exists()
