"""The command line's errors are one line, never a traceback: bad values, garbage TOML, unwritable
outputs and variant plug-ins that fail to import; duplicate axis values are dropped, not an error.
tests/cli/test_bad_inputs.py throws many more bad inputs at the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from harness.core.registry import LOAD_ERRORS
from harness.run.config import expand
from harness.run.validate import build_config
from harness.store.load import load_run

ROOT = Path(__file__).resolve().parents[2]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_inf_timeout_is_refused_with_a_long_bound_as_hint(cli):
    rc, _, err = cli("sweep", "--timeout-s", "inf", "--quiet")
    assert rc == 2 and "86400" in one_line(err)


def test_segment_is_an_axis_without_empty_items(cli):
    rc, _, err = cli("sweep", "--segment", "4,,8")
    assert rc == 2 and "--segment has an empty item" in one_line(err) and "'4,,8'" in err
    assert build_config({"segment": 4}).grid.segment == (4,)  # a scalar (an older run.json's) is one value


def test_duplicate_axis_values_are_dropped_in_order(cli, tiny, tmp_path):
    cfg = build_config({"variants": ["naive", "chunked", "naive"], "seq_lens": [64, 32, 64], "causal": [True, True]})
    assert cfg.grid.variants == ("naive", "chunked") and cfg.grid.seq_lens == (64, 32) and cfg.grid.causal == (True,)
    ids = [c.id for c in expand(cfg)]
    assert len(ids) == len(set(ids))
    rc, _, _ = cli("sweep", *tiny, "--variants", "naive,naive", "--seq-lens", "16,16", "--out", tmp_path / "r",
                   "--quiet")
    df, _ = load_run(tmp_path / "r")
    assert rc == 0 and len(df) == 1 and df["case_id"].is_unique


def test_garbage_bytes_as_toml_is_one_line(cli, tmp_path):
    bad = tmp_path / "garbage.toml"
    bad.write_bytes(bytes(range(256)) * 4)
    rc, _, err = cli("sweep", "--config", bad)
    assert rc == 2 and "not UTF-8" in one_line(err) and "garbage.toml" in err
    bad.write_text("seq_lens = [64,\n")
    rc, _, err = cli("sweep", "--config", bad)
    assert rc == 2 and "is not valid TOML" in one_line(err)


def test_out_that_is_a_file_or_unwritable(cli, tiny, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    rc, _, err = cli("sweep", *tiny, "--out", f, "--quiet")
    assert rc == 2 and "is a file, not a folder" in one_line(err) and str(f) in err
    rc, _, err = cli("sweep", *tiny, "--out", "/proc/x", "--quiet")
    assert rc == 2 and "cannot be written" in one_line(err) and "/proc/x" in err


def test_report_to_an_unwritable_path_fails_before_rendering(cli, tiny_run, monkeypatch):
    from harness.render import report

    rendered = []
    monkeypatch.setattr(report, "render_report", lambda *a, **k: rendered.append(a) or "")
    rc, _, err = cli("report", tiny_run, "-o", "/proc/x/report.html")
    assert rc == 2 and "cannot write the report" in one_line(err) and "/proc/x/report.html" in err
    assert rendered == []  # refused before the (slow) rendering


def test_a_broken_plugin_is_named_with_its_import_error(cli, tiny, monkeypatch, tmp_path):
    monkeypatch.setitem(LOAD_ERRORS, "broken", "ModuleNotFoundError: No module named 'nonexistent_dep'")
    for argv in (["check", "--variants", "broken"], ["sweep", *tiny, "--variants", "broken", "--out", tmp_path / "r"]):
        rc, _, err = cli(*argv)
        line = one_line(err)
        assert rc == 2 and "variant 'broken' failed to load: ModuleNotFoundError" in line and "hint" in line
    rc, out, _ = cli("list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["broken"]["load_error"].startswith("ModuleNotFoundError")
    assert rows["broken"]["devices"]["cpu"]["available"] is False
    assert rows["naive"]["load_error"] is None


def test_a_broken_plugin_end_to_end(tmp_path):
    """A real entry point whose module fails to import, in a fresh process."""
    (tmp_path / "attnbench_test_broken.py").write_text("import nonexistent_dep_for_attnbench_tests\n")
    dist = tmp_path / "attnbench_test_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: attnbench-test-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[attnbench.variants]\nbroken = attnbench_test_broken\n")
    script = textwrap.dedent("""
        import contextlib, io, json
        from harness.cli.main import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            main(["list", "--json"])
        print(json.dumps([r for r in json.loads(out.getvalue()) if r["name"] == "broken"]))
        print(main(["check", "--variants", "broken"]))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path)
    assert "Traceback" not in res.stderr, res.stderr
    listed, rc = res.stdout.strip().splitlines()[-2:]
    assert "nonexistent_dep_for_attnbench_tests" in json.loads(listed)[0]["load_error"]
    assert rc == "2" and "variant 'broken' failed to load: ModuleNotFoundError" in res.stderr
