"""Helpers for the command-line tests: run `attnbench` in this process and capture what it prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli.main import main

# The smallest sweep that measures something: one case of a few microseconds.
TINY = ["--variants", "naive", "--patterns", "global", "--causal", "no", "--seq-lens", "16", "--heads", "1",
        "--batch", "1", "--head-dims", "8", "--dtypes", "float32", "--passes", "fwd", "--budget-s", "0.01",
        "--device", "cpu"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `attnbench ARGV` (argparse's SystemExit included)."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def cli(capsys):
    """``cli(*argv) -> (exit status, stdout, stderr)``."""
    return lambda *argv: run_cli(capsys, *argv)


@pytest.fixture(scope="session")
def tiny() -> list[str]:
    """Axis options of the smallest sweep that measures something."""
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished run folder of the TINY sweep (for show and report)."""
    from harness.run.validate import build_config
    from harness.run.sweep import run_sweep

    config = build_config({"variants": ["naive"], "patterns": ["global"], "causal": [False], "seq_lens": [16],
                           "heads": [1], "batch": [1], "head_dims": [8], "dtypes": ["float32"],
                           "passes": ["fwd"], "budget_s": 0.01, "device": "cpu", "name": "tiny"})
    return run_sweep(config, out=tmp_path_factory.mktemp("runs") / "tiny", quiet=True)
