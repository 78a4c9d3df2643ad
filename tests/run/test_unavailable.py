"""A variant that cannot run on the sweep's device at all is said once, with its reasons, in run.json;
its cells fill no rows unless --all-cells asks for them. A case refused for its shape is still a row."""

from __future__ import annotations

from harness.run.sweep import run_sweep
from harness.run.validate import build_config
from harness.store.load import load_run

GRID = {"variants": ["naive", "local", "sdpa_cudnn"], "patterns": ["global"], "seq_lens": [16], "heads": [1],
        "head_dims": [8], "budget_s": 0.005, "retries": 0, "ceiling_retries": 0, "recheck_retries": 0}


def test_a_variant_unavailable_on_the_device_is_said_once(tmp_path, capsys):
    df, meta = load_run(run_sweep(build_config(GRID), out=tmp_path / "a", quiet=False))
    assert set(df["variant"]) == {"naive", "local"}  # local refuses the global pattern: a row with its reason
    assert df.set_index("variant").loc["local", "status"] == "unsupported"
    assert list(meta["unavailable"]) == ["sdpa_cudnn"] and "CPU" in meta["unavailable"]["sdpa_cudnn"][0]
    assert "sdpa_cudnn cannot run on cpu at all" in capsys.readouterr().err


def test_all_cells_keeps_their_rows(tmp_path):
    df, meta = load_run(run_sweep(build_config({**GRID, "all_cells": True}), out=tmp_path / "b", quiet=True))
    assert set(df["variant"]) == {"naive", "local", "sdpa_cudnn"} and meta["unavailable"] == {}
    assert df.set_index("variant").loc["sdpa_cudnn", "status"] == "unsupported"


def test_a_sweep_nothing_of_which_can_run_here_is_one_line(tmp_path, capsys):
    from harness.cli.main import main

    assert main(["sweep", "--variants", "sdpa_cudnn,sdpa_efficient", "--patterns", "global", "--seq-lens", "16",
                 "--out", str(tmp_path / "c"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no variant of this sweep can run on cpu" in err and "--all-cells" in err and len(err.splitlines()) == 1
