"""Faults a demanding new user hits, not covered elsewhere (tests/cli/test_bad_inputs.py,
tests/run/test_stops.py, tests/bench/test_wrong_status.py cover the rest).

Each test pins what the user sees: one line naming the value, with a hint, or a row with its reason.
No test here depends on timing or on the machine being quiet: the correctness check is called directly,
and the one sweep that runs replaces its measurement with ``fake_measure``.
"""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from harness.bench.check import Shape, check_one
from harness.bench.verify import ReferenceCache, check_prepared
from harness.bench.prepare import prepare
from harness.core.case import Case
from harness.core.registry import REGISTRY, Variant, get_variant


def one_line(rc: int, err: str) -> str:
    """The single stderr line of a refused command (exit status 2, no traceback)."""
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    assert lines[0].startswith("attnbench"), lines[0]
    return lines[0]


# ---- folders that are not runs ------------------------------------------------------------------
@pytest.fixture
def not_a_run(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a run\n")
    return folder


@pytest.mark.parametrize("kind", ["folder-with-a-file", "empty-folder", "a-file"])
def test_resume_of_something_that_is_not_a_run_is_one_line(cli, not_a_run, tmp_path, kind):
    target = {"folder-with-a-file": not_a_run, "empty-folder": tmp_path / "empty",
              "a-file": not_a_run / "readme.txt"}[kind]
    if kind == "empty-folder":
        target.mkdir()
    line = one_line(*cli("sweep", "--resume", target)[::2])
    assert str(target) in line and "not an attnbench run" in line and "hint" in line
    assert not (target / "journal.jsonl").exists() if target.is_dir() else True


@pytest.mark.parametrize("argv", [["show", "{d}"], ["report", "{d}", "-o", "{tmp}/r/index.html"],
                                  ["compare", "{run}", "{d}"], ["compare", "{d}", "{run}"]],
                         ids=["show", "report", "compare-new", "compare-base"])
def test_show_report_compare_of_an_empty_folder_is_one_line(cli, tiny_run, tmp_path, argv):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.format(d=empty, tmp=tmp_path, run=tiny_run) for a in argv]
    line = one_line(*cli(*args)[::2])
    assert str(empty) in line and "not an attnbench run" in line and "hint" in line
    assert not (tmp_path / "r" / "index.html").exists()


# ---- values the command line and TOML refuse ----------------------------------------------------
@pytest.mark.parametrize("argv, words", [
    (["--timeout-s", "0"], ["timeout_s", "0.0", "hint"]),
    (["--rounds", "0"], ["rounds", "0", "hint"]),
    (["--retries", "-1"], ["retries", "-1", "hint"]),
    (["--recheck-retries", "-2"], ["recheck_retries", "-2", "hint"]),
    (["--threads", "0"], ["threads", "0", "hint"]),
    (["--heads", "4", "--kv-heads", "3"], ["heads=4", "kv_heads=3", "hint"]),
    (["--q-lens", "32"], ["q_len=32", "kv_len=16", "hint"]),
    (["--ray-address", "auto"], ["--ray-address", "--executor ray"]),
    (["--dtypes", "fp16"], ["'fp16'", "float16"]),
    (["--passes", "fwd,"], ["--passes", "empty item", "'fwd,'"]),
], ids=["timeout-zero", "rounds-zero", "retries-negative", "recheck-negative", "threads-zero", "kv-heads",
        "q-len-above-kv", "ray-address-local", "dtype-alias", "passes-trailing-comma"])
def test_more_bad_values_are_one_line_naming_the_value(cli, tiny, tmp_path, argv, words):
    out = tmp_path / "r"
    line = one_line(*cli("sweep", *tiny, *argv, "--out", out, "--quiet")[::2])
    assert all(w in line for w in words), line
    assert not (out / "journal.jsonl").exists()


@pytest.mark.parametrize("text, words", [
    ("[seq_lens]\na = 1\n", ["seq_lens", "{'a': 1}", "dict", "hint"]),
    ("heads = 8.0\n", ["heads", "8.0", "float", "hint"]),
    ('device = "cuda:0"\n', ["'cuda:0'", "valid devices"]),
    ('passes = ["fwd", 1]\n', ["passes", "1", "int", "hint"]),
], ids=["axis-as-table", "heads-float", "device-with-index", "passes-mixed"])
def test_bad_toml_types_are_one_line(cli, tmp_path, text, words):
    (tmp_path / "c.toml").write_text(text)
    line = one_line(*cli("sweep", "--config", tmp_path / "c.toml", "--out", tmp_path / "r")[::2])
    assert all(w in line for w in words), line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_line_with_a_hint(cli, tiny, tmp_path):
    axes = [a for a in tiny if a not in ("--device", "cpu")]
    line = one_line(*cli("sweep", *axes, "--device", "cuda", "--out", tmp_path / "r", "--quiet")[::2])
    assert "no variant of this sweep can run on cuda" in line and "--device" in line and "hint" in line
    assert not (tmp_path / "r" / "journal.jsonl").exists()


def test_float16_on_cpu_is_checked_against_its_own_tolerance():
    res = check_one(get_variant("naive"), "global", False, Shape(1, 2, 32, 16), dtype="float16")
    assert res.ok and 0 < res.errors["out"] < res.tolerance[0], res.describe()


def test_compare_a_run_with_itself_is_never_a_regression(cli, tiny_run):
    rc, out, err = cli("compare", tiny_run, tiny_run)
    assert rc == 0 and "Traceback" not in err and "regression" not in err, err
    rc, out, _ = cli("compare", tiny_run, tiny_run, "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and not doc["summary"]["failing"]
    assert {r["verdict"] for r in doc["cases"]} <= {"same", "untrusted"}, doc["cases"]


# ---- kernels that cheat or fail -----------------------------------------------------------------
class _Cheat(Variant):
    """Misbehaves by its `mode`: memo (the output of an earlier call on the same tensors, returned
    again), zero_k (writes its inputs: k zeroed in place, so the mean of v looks right), nan."""

    name = "test_fault_cheat"
    patterns = ("global",)
    default_params = {"mode": "memo"}

    def forward(self, q, k, v, pattern):
        mode = self.params["mode"]
        if mode == "zero_k":
            with torch.no_grad():
                k.zero_()
            return v.mean(dim=-2, keepdim=True).expand(q.shape).contiguous()
        if mode == "nan":
            return torch.full_like(q, float("nan"))
        key = (q.data_ptr(), k.data_ptr(), v.data_ptr(), q._version)
        memo = self.__dict__.setdefault("memo", {})
        if key not in memo:
            memo.clear()
            memo[key] = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=pattern.causal)
        return memo[key]


@pytest.fixture
def cheat(monkeypatch):
    monkeypatch.setitem(REGISTRY, _Cheat.name, _Cheat)
    return _Cheat.name


def _checked(name: str, cache: ReferenceCache, **params) -> dict:
    case = Case(name, seq_len=32, heads=2, head_dim=16, params=tuple(params.items()))
    return check_prepared(prepare(get_variant(name, **params), case), cache)


def test_a_kernel_that_writes_its_inputs_is_wrong_and_blames_no_other(cheat):
    cache = ReferenceCache()
    cheater = _checked(cheat, cache, mode="zero_k")
    honest = _checked("naive", cache)
    assert honest["wrong"] is None, honest["wrong"]
    assert cheater["wrong"] == "modified its inputs in place (k)", cheater["wrong"]


def test_check_fails_a_kernel_that_writes_its_inputs(cheat):
    res = check_one(get_variant(cheat, mode="zero_k"), "global", False, Shape(1, 2, 32, 16))
    assert not res.ok and res.exception is None and "modified its inputs in place (k)" in res.describe()


def test_a_kernel_that_returns_an_earlier_output_for_the_same_inputs_is_wrong(cheat):
    wrong = _checked(cheat, ReferenceCache(), mode="memo")["wrong"]
    assert wrong is not None and "earlier call's output for new input values" in wrong, wrong


def test_check_calls_a_nan_output_wrong_not_raised(cli, cheat, monkeypatch):
    from harness.bench import check

    monkeypatch.setitem(check.CHECK_PARAMS, cheat, {"mode": "nan"})
    rc, out, err = cli("check", "--variants", cheat)
    assert rc == 1 and "non-finite" in out and "WRONG" in out and "FAILED" not in out, out
    assert "raised" not in out.replace("0 raised an exception", ""), out


# ---- faults whose message once misled --------------------------------------------------------------
def test_a_full_disk_while_writing_the_tables_prints_the_resume(cli, tiny, tmp_path, monkeypatch, fake_measure):
    from harness.run import sweep

    def full(run_dir, rows):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run_dir / "results.parquet"))

    monkeypatch.setattr(sweep, "write_tables", full)
    out = tmp_path / "r"
    line = one_line(*cli("sweep", *tiny, "--retries", "0", "--ceiling-retries", "0", "--recheck-retries", "0",
                         "--out", out, "--quiet")[::2])
    assert "results.parquet" in line and "No space left" in line
    assert f"attnbench sweep --resume {out}" in line


def test_an_empty_out_is_refused_as_empty(cli, tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    line = one_line(*cli("sweep", *tiny, "--out", "", "--quiet")[::2])
    assert "--out" in line and "not empty" not in line and "--resume ." not in line


def test_a_resume_with_one_grid_flag_names_only_that_flag(cli, tiny_run):
    line = one_line(*cli("sweep", "--resume", tiny_run, "--seq-lens", "32", "--quiet")[::2])
    assert "seq_lens" in line and "variants" not in line.split("hint")[0], line


def test_all_among_other_variants_says_all_stands_alone(cli, tiny, tmp_path):
    line = one_line(*cli("sweep", *tiny, "--variants", "all,naive", "--out", tmp_path / "r")[::2])
    assert "unknown variant 'all'" not in line and "all" in line


def test_show_says_where_the_time_went():
    from harness.cli.show import time_line

    meta = {"phases_s": {"machine figures": 3.4, "cases": 250.2, "re-check": 30.0, "tables": 0.2, "rounds": 0.0},
            "cost_s": {"timing": 120.0, "check": 60.4, "prepare": 40.0, "peak memory": 9.6, "fidelity": 0.1}}
    assert time_line(meta) == ("time: 284 s in all: machine figures 3 s, cases 250 s, re-check 30 s, tables 0.2 s; "
                               "measuring, by step: timing 120 s, check 60 s, prepare 40 s, peak memory 10 s")
    assert time_line({}) == ""


def test_a_reader_that_goes_away_ends_show_quietly(tiny_run):
    """`attnbench show RUN | head`: the pipe closes before the output; no error line (the exit status is
    SIGPIPE's, or rich's 1 when its console meets the closed pipe first)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "harness", "show", str(tiny_run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before the command (still importing) writes a byte
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (1, 141) and not err, err
