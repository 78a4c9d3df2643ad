"""Issue 10: every bad input a one-line error, every fault a row, nothing silently changed.

One test (or a few) per item of the issue, in its order; tests/cli/test_bad_inputs.py throws many more
bad inputs at the command line.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import re
import subprocess
import sys
import textwrap
import time
import tomllib
import warnings
from pathlib import Path

import pandas as pd
import pytest

from harness.bench.check import CheckResult
from harness.core.case import Case
from harness.core.errors import InputError
from harness.core.registry import LOAD_ERRORS, REGISTRY, Variant, get_variant
from harness.run import executors
from harness.run.config import build_config, expand, load_toml, preset_names
from harness.run.progress import Progress
from harness.store.load import load_run

ROOT = Path(__file__).resolve().parents[2]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---- values silently accepted or changed --------------------------------------------------------
@pytest.mark.parametrize("data, words", [
    ({"causal": "no"}, ["causal", "'no'", "str", "true or false"]),
    ({"causal": [False, 1]}, ["causal", "1", "int", "true or false"]),
    ({"timeout_s": True}, ["timeout_s", "True", "bool", "seconds"]),
    ({"budget_s": "fast"}, ["budget_s", "'fast'", "str", "seconds"]),
    ({"params": 5}, ["params", "5", "int", "table"]),
    ({"params": {"chunked": 5}}, ["params.chunked", "5", "table"]),
    ({"params": {"chunked": {"chunk_q": "big"}}}, ["chunk_q", "'big'", "str", "integer >= 1"]),
    ({"params": {"chunked": {"chunk_q": True}}}, ["chunk_q", "True", "bool", "integer >= 1"]),
    ({"params": {"chunked": {"chunk_q": 0}}}, ["chunk_q", "0", "integer >= 1"]),
    ({"seq_lens": "64"}, ["seq_lens", "'64'", "str", "integers >= 1"]),
    ({"seq_lens": [64, 1.5]}, ["seq_lens", "1.5", "float", "integers >= 1"]),
    ({"variants": [1]}, ["variants", "1", "int", "strings"]),
    ({"window": 1.5}, ["window", "1.5", "float", "integer >= 1"]),
    ({"window": True}, ["window", "True", "bool", "integer"]),
    ({"segment": "big"}, ["segment", "'big'", "sqrt"]),
    ({"isolate": "yes"}, ["isolate", "'yes'", "str", "true or false"]),
    ({"max_error_elements": 0}, ["max_error_elements", "0", "integer >= 1"]),
    ({"device": 1}, ["device", "1", "int", "string"]),
    ({"name": 7}, ["name", "7", "int"]),
])
def test_wrong_types_in_a_sweep_config_are_named(data, words):
    with pytest.raises(InputError) as info:
        build_config(data)
    msg = str(info.value)
    assert "\n" not in msg and "hint" in msg
    for word in words:
        assert word in msg, (word, msg)


def test_variant_parameters_have_their_defaults_type():
    class Typed(Variant):  # not registered: only the parameter check is exercised
        name = "test_typed"
        default_params = {"n": 4, "scale": 0.5, "fast": True, "mode": "a"}

    Typed(n=8, scale=2, fast=False, mode="b")
    for key, bad, expected in [("n", "big", "an integer >= 1"), ("n", 2.0, "an integer >= 1"), ("scale", "x", "a finite number"),
                               ("scale", math.nan, "a finite number"), ("fast", 1, "true or false"),
                               ("mode", 3, "a string")]:
        with pytest.raises(InputError, match=f"parameter {key} must be {expected}, got .*hint: {key} = "):
            Typed(**{key: bad})
    with pytest.raises(InputError, match="chunk_q must be an integer >= 1, got 'big' \\(str\\)"):
        get_variant("chunked", chunk_q="big")


@pytest.mark.parametrize("key, value", [("timeout_s", math.nan), ("timeout_s", math.inf), ("budget_s", math.nan),
                                        ("budget_s", math.inf), ("budget_s", -1.0), ("timeout_s", 0)])
def test_non_finite_or_non_positive_seconds_are_refused(key, value):
    with pytest.raises(InputError, match=f"{key} must be a finite number of seconds > 0, got {value!r}"):
        build_config({key: value})


def test_inf_timeout_is_refused_with_a_long_bound_as_hint(cli):
    rc, _, err = cli("sweep", "--timeout-s", "inf", "--quiet")
    assert rc == 2 and "86400" in one_line(err)


def test_segment_takes_one_value(cli):
    rc, _, err = cli("sweep", "--segment", "4,8")
    assert rc == 2 and "--segment takes one value" in one_line(err) and "'4,8'" in err
    assert build_config({"segment": 4}).segment == 4


def test_run_names_cannot_leave_results(tmp_path):
    for name in ("../../../escaped", "a/b", ".hidden", "", "x" * 65):
        with pytest.raises(InputError, match="name must be a plain run name"):
            build_config({"name": name})
    toml = tmp_path / "my sweep (v2).toml"
    toml.write_text('variants = ["naive"]\n')
    assert load_toml(str(toml), False)["name"] == "my-sweep-v2"  # a file's stem is made safe, not refused
    assert build_config(load_toml(str(toml), False)).name == "my-sweep-v2"


def test_duplicate_axis_values_are_dropped_in_order(cli, tiny, tmp_path):
    cfg = build_config({"variants": ["naive", "chunked", "naive"], "seq_lens": [64, 32, 64], "causal": [True, True]})
    assert cfg.variants == ("naive", "chunked") and cfg.seq_lens == (64, 32) and cfg.causal == (True,)
    ids = [c.id for c in expand(cfg)]
    assert len(ids) == len(set(ids))
    rc, _, _ = cli("sweep", *tiny, "--variants", "naive,naive", "--seq-lens", "16,16", "--out", tmp_path / "r",
                   "--quiet")
    df, _ = load_run(tmp_path / "r")
    assert rc == 0 and len(df) == 1 and df["case_id"].is_unique


# ---- memory and time outside any protection -----------------------------------------------------
def test_a_case_beyond_memory_is_an_oom_row_at_once(cli, tmp_path):
    t0 = time.perf_counter()
    rc, _, err = cli("sweep", "--variants", "naive", "--patterns", "local", "--seq-lens", "1000000000",
                     "--heads", "1", "--head-dims", "16", "--budget-s", "0.01", "--out", tmp_path / "x", "--quiet")
    assert rc == 0 and "Traceback" not in err
    assert time.perf_counter() - t0 < 30
    df, _ = load_run(tmp_path / "x")
    assert len(df) > 0 and (df["status"] == "oom").all()
    reason = df["reason"].iloc[0]
    assert "not attempted" in reason and "bytes" in reason and "GiB" in reason and "available on cpu" in reason


def test_memory_shortfall_figures(monkeypatch):
    case = Case("naive", heads=2, seq_len=1024, head_dim=64, pass_="fwd_bwd")
    assert executors.footprint_bytes(case) == 8 * 2 * 1024 * 64 * 4
    monkeypatch.setattr(executors, "available_bytes", lambda device: 1000)
    reason = executors.memory_shortfall(case)
    assert f"{8 * 2 * 1024 * 64 * 4} bytes" in reason and "1000 bytes" in reason and "gradients" in reason
    monkeypatch.setattr(executors, "available_bytes", lambda device: 1 << 40)
    assert executors.memory_shortfall(case) is None


# ---- tracebacks where the README promises one line ----------------------------------------------
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


def test_report_to_an_unwritable_path_fails_before_rendering(cli, tiny_run):
    t0 = time.perf_counter()
    rc, _, err = cli("report", tiny_run, "-o", "/proc/x/report.html")
    assert rc == 2 and "cannot write the report" in one_line(err) and "/proc/x/report.html" in err
    assert time.perf_counter() - t0 < 5  # refused before the (slow) rendering


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


class _RaisesWhenCausal(Variant):
    name = "test_raises_when_causal"
    description = "test variant: raises on causal patterns"
    patterns = ("global",)
    backward = False

    def forward(self, q, k, v, pattern):
        import torch

        if pattern.causal:
            raise RuntimeError("deliberate failure\nsecond line")
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def test_check_reports_a_variant_that_raises_and_goes_on(cli, monkeypatch):
    monkeypatch.setitem(REGISTRY, _RaisesWhenCausal.name, _RaisesWhenCausal)
    rc, out, err = cli("check", "--variants", _RaisesWhenCausal.name, "-v")
    assert rc == 1 and "Traceback" not in out + err
    failed = [line for line in out.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 4 and all("global-causal" in f and "raised RuntimeError: deliberate failure" in f
                                    and "[B=" in f for f in failed)
    assert sum(line.startswith("ok ") for line in out.splitlines()) == 4  # the non-causal cells still ran
    assert "4 correct, 0 wrong, 4 raised an exception" in out


def test_check_reports_a_variant_that_cannot_be_made(cli, monkeypatch):
    class Unmakeable(_RaisesWhenCausal):
        name = "test_unmakeable"

        def __init__(self, **params):
            raise OSError("no such library")

    monkeypatch.setitem(REGISTRY, Unmakeable.name, Unmakeable)
    rc, out, err = cli("check", "--variants", Unmakeable.name)
    assert rc == 1 and "FAILED test_unmakeable" in out and "raised OSError: no such library" in out
    assert CheckResult("x", "p", None, "float32", "cpu", "fwd", exception="E: x").ok is False


def test_record_sh_describes_a_fresh_machine(tmp_path):
    fake = tmp_path / "asv"
    fake.write_text(textwrap.dedent("""\
        #!/usr/bin/env bash
        echo "$*" >> "$ASV_LOG"
        if [ "$1" = machine ]; then
          python3 -c 'import json, os, platform; json.dump({"version": 1, platform.uname().node: {}},
                      open(os.path.expanduser("~/.asv-machine.json"), "w"))'
        fi
    """))
    fake.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "ASV": str(fake), "ASV_LOG": str(tmp_path / "log")}
    for _ in range(2):
        res = subprocess.run(["bash", "harness/asv_bench/record.sh", "HEAD", "-b", "nothing"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
    calls = (tmp_path / "log").read_text().splitlines()
    assert calls[0] == "machine --yes"  # the first time only: then the machine is known
    assert [c.split()[0] for c in calls] == ["machine", "run", "run"]
    assert json.loads((home / ".asv-machine.json").read_text())[platform.uname().node] == {}


# ---- what users see -----------------------------------------------------------------------------
class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_plain_progress_lines_every_so_often():
    stream, clock = io.StringIO(), _Clock()
    progress = Progress(total=200, done=0, quiet=False, stream=stream, clock=clock)
    case = Case("naive")
    for i in range(200):
        progress.show(case)
        clock.t += 0.5  # 100 s in all: every 5% (10 cases, 5 s) comes first
        progress.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20 and lines[0].startswith("case 10/200 (5%), elapsed 0:00:05, ETA 0:01:35, last: naive/")
    assert lines[-1].startswith("case 200/200 (100%), elapsed 0:01:40, ETA 0:00:00")

    stream, clock = io.StringIO(), _Clock()
    progress = Progress(total=10_000, done=5_000, quiet=False, stream=stream, clock=clock)
    for _ in range(30):
        clock.t += 1.0  # slow cases: a line every 10 s
        progress.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("case 5010/10000 (50%), elapsed 0:00:10, ETA 1:23:10")

    stream = io.StringIO()
    quiet = Progress(total=3, done=0, quiet=True, stream=stream, clock=_Clock())
    for _ in range(3):
        quiet.advance()
    assert stream.getvalue() == ""


def test_list_shows_backward_per_device(cli, registry):
    rc, out, _ = cli("list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    flex_cpu = rows["flex"]["devices"]["cpu"]
    if flex_cpu["available"]:
        assert flex_cpu["backward"] is False and "backward on CPU" in flex_cpu["backward_reasons"][0]
    assert rows["naive"]["devices"]["cpu"]["backward"] is True
    rc, out, _ = cli("list")
    flex_text = out.split("flex:")[1].split("\n")[2]
    assert flex_text.startswith("  cpu:") and ("backward: no" in flex_text or "unavailable" in flex_text)


def test_help_lists_every_preset_and_every_dtype(cli):
    for command in ("sweep", "run"):
        rc, out, _ = cli(command, "--help")
        text = " ".join(re.sub(r"-\n\s*", "-", out).split())  # argparse wraps long names at hyphens
        assert rc == 0 and all(p in text for p in preset_names())
        assert all(dt in text for dt in ("float32", "float16", "bfloat16", "float64"))


def test_pyproject_license_dependencies_and_warning_filters():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"  # SPDX string: no setuptools deprecation warning
    assert any(r.startswith("setuptools>=7") and int(r.split(">=")[1].split(".")[0]) >= 77
               for r in meta["build-system"]["requires"])
    assert "psutil" in meta["project"]["dependencies"]
    filters = meta["tool"]["pytest"]["ini_options"]["filterwarnings"]
    assert any(f.startswith("error::Warning:harness") for f in filters)


def test_a_warning_from_our_code_fails_the_tests():
    for module in ("harness", "harness.run.sweep", "variants.flex"):
        with pytest.raises(UserWarning):
            warnings.warn_explicit("a new warning", UserWarning, "x.py", 1, module=module)
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit("not ours", UserWarning, "x.py", 1, module="harnessing")
        warnings.warn_explicit("`torch.jit.script_method` is deprecated. Please switch to `torch.compile` or "
                               "`torch.export`.", DeprecationWarning, "_script.py", 1, module="torch.jit._script")
    assert [str(w.message) for w in seen] == ["not ours"]  # torch's script_method warning is filtered


def test_twin_note_says_what_is_smaller():
    from harness.render.context import twin_note

    row = {"error_on_twin": True, "seq_len": 4096, "error_seq_len": 4096, "batch": 2, "error_batch": 1,
           "heads": 8, "error_heads": 2}
    assert twin_note(row) == "on a smaller twin (batch = 1 instead of 2, heads = 2 instead of 8)"
    assert twin_note({**row, "error_seq_len": 1024, "error_batch": 2}) == \
        "on a smaller twin (N = 1024 instead of 4096, heads = 2 instead of 8)"
    assert twin_note({**row, "error_on_twin": False}) == "on the timed case"
    assert twin_note({**row, "error_seq_len": pd.NA, "error_batch": None, "error_heads": math.nan}) == \
        "on a smaller twin"
