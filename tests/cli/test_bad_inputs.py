"""Bad inputs and faults thrown at the command line.

Every bad input: exit status 2 and exactly one line on stderr that names the value and says what works
("hint", the valid values, or argparse's choices). Every fault: a row with a status and a reason, no row
lost or duplicated. Never a traceback.
"""

from __future__ import annotations

import time

import pytest
import torch

from harness.core.case import STATUSES
from harness.core.registry import REGISTRY, Variant
from harness.store.load import load_run

# (id, argv, words the one line must contain); "{tmp}" is the test's tmp_path, "{run}" a finished run,
# "{toml}" a config file whose text is TOMLS[id].
BAD = [
    ("unknown-command", ["frobnicate"], ["frobnicate"]),
    ("unknown-flag", ["sweep", "--bogus"], ["--bogus"]),
    ("variant", ["sweep", "--variants", "nosuch"], ["'nosuch'"]),
    ("variants-empty", ["sweep", "--variants", ""], ["variants is empty"]),
    ("variants-commas", ["sweep", "--variants", ",,"], ["variants is empty"]),
    ("pattern", ["sweep", "--patterns", "diagonal"], ["'diagonal'"]),
    ("dtype", ["sweep", "--dtypes", "float8"], ["'float8'"]),
    ("pass", ["sweep", "--passes", "bwd"], ["'bwd'"]),
    ("device", ["sweep", "--device", "tpu"], ["'tpu'"]),
    ("seq-lens-text", ["sweep", "--seq-lens", "12x"], ["'12x'"]),
    ("seq-lens-zero", ["sweep", "--seq-lens", "0"], ["seq_lens", "0"]),
    ("seq-lens-negative", ["sweep", "--seq-lens", "-5"], ["seq_lens", "-5"]),
    ("seq-lens-empty", ["sweep", "--seq-lens", ""], ["seq_lens is empty"]),
    ("heads-float", ["sweep", "--heads", "1.5"], ["'1.5'"]),
    ("batch-zero", ["sweep", "--batch", "0"], ["batch", "0"]),
    ("head-dims-text", ["sweep", "--head-dims", "abc"], ["'abc'"]),
    ("window-zero", ["sweep", "--window", "0"], ["window", "0"]),
    ("window-empty-item", ["sweep", "--window", "32,,64"], ["--window", "empty item", "'32,,64'"]),
    ("window-empty", ["sweep", "--window", ""], ["window is empty"]),
    ("window-float", ["sweep", "--window", "32,1.5"], ["--window", "'1.5'", "whole numbers", "--window 2"]),
    ("window-sqrt", ["sweep", "--window", "sqrt"], ["--window", "'sqrt'", "--segment"]),
    ("segment-empty-item", ["sweep", "--segment", "16,,sqrt"], ["--segment", "empty item"]),
    ("segment-text", ["sweep", "--segment", "big"], ["'big'"]),
    ("segment-zero", ["sweep", "--segment", "0"], ["segment", "0"]),
    ("segment-float", ["sweep", "--segment", "sqrt,2.5"], ["--segment", "'2.5'", "whole numbers"]),
    ("sinks-zero", ["sweep", "--sinks", "0"], ["sinks", "0"]),
    ("sinks-text", ["sweep", "--sinks", "four"], ["--sinks", "'four'", "--sinks 4"]),
    ("stride-empty-item", ["sweep", "--stride", "2,,4"], ["--stride", "empty item"]),
    ("stride-negative", ["sweep", "--stride", "-2"], ["stride", "-2"]),
    ("globals-empty", ["sweep", "--globals", ","], ["globals is empty"]),
    ("topk-float", ["sweep", "--topk", "32,6.5"], ["--topk", "'6.5'", "--topk 6"]),
    ("topk-zero", ["sweep", "--topk", "0"], ["topk", "0"]),
    ("layers-negative", ["sweep", "--layers", "0,-1"], ["layers", "-1", ">= 0"]),
    ("layers-text", ["sweep", "--layers", "last"], ["--layers", "'last'", "--layers 0,15,29"]),
    ("inputs-empty", ["sweep", "--inputs", ""], ["inputs is empty"]),
    ("toml-window-empty", ["sweep", "--config", "{toml}"], ["window is empty"]),
    ("toml-topk-text", ["sweep", "--config", "{toml}"], ["topk", "'64'", "str"]),
    ("toml-segment-bool", ["sweep", "--config", "{toml}"], ["segment", "True", "bool"]),
    ("budget-nan", ["sweep", "--budget-s", "nan"], ["budget_s", "nan"]),
    ("budget-inf", ["sweep", "--budget-s", "inf"], ["budget_s", "inf"]),
    ("budget-zero", ["sweep", "--budget-s", "0"], ["budget_s", "0"]),
    ("budget-negative", ["sweep", "--budget-s", "-1"], ["budget_s", "-1"]),
    ("budget-text", ["sweep", "--budget-s", "fast"], ["'fast'"]),
    ("timeout-nan", ["sweep", "--timeout-s", "nan"], ["timeout_s", "nan"]),
    ("timeout-inf", ["sweep", "--timeout-s", "inf"], ["timeout_s", "inf", "86400"]),
    ("timeout-text", ["sweep", "--timeout-s", "long"], ["'long'"]),
    ("allocator", ["sweep", "--allocator", "jemalloc"], ["'jemalloc'", "steady"]),
    ("toml-allocator", ["sweep", "--config", "{toml}"], ["allocator", "'tcmalloc'", "steady"]),
    ("causal", ["sweep", "--causal", "maybe"], ["'maybe'"]),
    ("preset", ["sweep", "--preset", "nosuch"], ["'nosuch'"]),
    ("preset-and-config", ["sweep", "--preset", "quick", "--config", "{toml}"], ["--preset", "--config"]),
    ("config-missing", ["sweep", "--config", "{tmp}/missing.toml"], ["missing.toml"]),
    ("config-folder", ["sweep", "--config", "{tmp}"], ["is not a file"]),
    ("config-garbage", ["sweep", "--config", "{toml}"], ["c.toml", "not UTF-8"]),
    ("config-syntax", ["sweep", "--config", "{toml}"], ["c.toml", "not valid TOML"]),
    ("toml-causal-text", ["sweep", "--config", "{toml}"], ["causal", "'no'", "str"]),
    ("toml-timeout-bool", ["sweep", "--config", "{toml}"], ["timeout_s", "True", "bool"]),
    ("toml-chunk-q-text", ["sweep", "--config", "{toml}"], ["chunk_q", "'big'", "str"]),
    ("toml-chunk-q-zero", ["sweep", "--config", "{toml}"], ["chunk_q", "0"]),
    ("toml-chunk-q-bool", ["sweep", "--config", "{toml}"], ["chunk_q", "True", "bool"]),
    ("toml-params-int", ["sweep", "--config", "{toml}"], ["params", "5", "int"]),
    ("toml-params-variant-int", ["sweep", "--config", "{toml}"], ["params.chunked", "5"]),
    ("toml-params-unknown-name", ["sweep", "--config", "{toml}"], ["chunk_z"]),
    ("toml-params-unknown-variant", ["sweep", "--config", "{toml}"], ["'nosuch'"]),
    ("toml-name-escapes", ["sweep", "--config", "{toml}"], ["name", "'../../../escaped'"]),
    ("toml-unknown-key", ["sweep", "--config", "{toml}"], ["'seq_len'"]),
    ("toml-seq-lens-text", ["sweep", "--config", "{toml}"], ["seq_lens", "'64'", "str"]),
    ("toml-isolate-text", ["sweep", "--config", "{toml}"], ["isolate", "'yes'"]),
    ("toml-window-float", ["sweep", "--config", "{toml}"], ["window", "1.5", "float"]),
    ("toml-device-int", ["sweep", "--config", "{toml}"], ["device", "1", "int"]),
    ("toml-variants-int", ["sweep", "--config", "{toml}"], ["variants", "1", "int"]),
    ("toml-budget-text", ["sweep", "--config", "{toml}"], ["budget_s", "'fast'"]),
    ("toml-max-error-zero", ["sweep", "--config", "{toml}"], ["max_error_elements", "0"]),
    ("toml-budget-inf", ["sweep", "--config", "{toml}"], ["budget_s", "inf"]),
    ("out-is-a-file", ["sweep", "--out", "{toml}"], ["c.toml", "is a file"]),
    ("out-unwritable", ["sweep", "--out", "/proc/x"], ["'/proc/x'"]),
    ("resume-missing", ["sweep", "--resume", "{tmp}/nothing"], ["nothing"]),
    ("show-missing", ["show", "{tmp}/nothing"], ["nothing"]),
    ("show-a-file", ["show", "{toml}"], ["c.toml"]),
    ("show-no-argument", ["show"], ["run_dir"]),
    ("report-missing", ["report", "{tmp}/nothing"], ["nothing"]),
    ("report-not-html", ["report", "{run}", "-o", "{tmp}/report.txt"], ["report.txt"]),
    ("report-unwritable", ["report", "{run}", "-o", "/proc/x/report.html"], ["/proc/x/report.html"]),
    ("report-baseline", ["report", "{run}", "--baseline", "nosuch", "-o", "{tmp}/r.html"], ["'nosuch'"]),
    ("compare-missing", ["compare", "{tmp}/a", "{tmp}/b"], ["a"]),
    ("compare-confidence", ["compare", "{run}", "{run}", "--confidence", "nan"], ["nan"]),
    ("compare-format", ["compare", "{run}", "{run}", "--format", "xml"], ["'xml'"]),
    ("check-device", ["check", "--device", "tpu"], ["'tpu'"]),
    ("check-dtype", ["check", "--dtypes", "float8"], ["'float8'"]),
    ("check-variant", ["check", "--variants", "nosuch"], ["'nosuch'"]),
    ("check-variants-empty", ["check", "--variants", ""], ["--variants is empty"]),
    ("run-baseline", ["run", "--variants", "naive", "--baseline", "chunked"], ["'chunked'"]),
]

TOMLS = {
    "preset-and-config": 'variants = ["naive"]\n',
    "config-garbage": b"\xff\xfe\x00garbage\x80\x81",
    "config-syntax": "seq_lens = [64,\n",
    "toml-causal-text": 'causal = "no"\n',
    "toml-timeout-bool": "timeout_s = true\n",
    "toml-chunk-q-text": '[params.chunked]\nchunk_q = "big"\n',
    "toml-chunk-q-zero": "[params.chunked]\nchunk_q = 0\n",
    "toml-chunk-q-bool": "[params.chunked]\nchunk_q = true\n",
    "toml-params-int": "params = 5\n",
    "toml-params-variant-int": "[params]\nchunked = 5\n",
    "toml-params-unknown-name": "[params.chunked]\nchunk_z = 1\n",
    "toml-params-unknown-variant": "[params.nosuch]\nx = 1\n",
    "toml-name-escapes": 'name = "../../../escaped"\n',
    "toml-unknown-key": "seq_len = [64]\n",
    "toml-seq-lens-text": 'seq_lens = "64"\n',
    "toml-isolate-text": 'isolate = "yes"\n',
    "toml-window-float": "window = 1.5\n",
    "toml-window-empty": "window = []\n",
    "toml-topk-text": 'topk = ["64"]\n',
    "toml-segment-bool": "segment = [true]\n",
    "toml-device-int": "device = 1\n",
    "toml-variants-int": "variants = [1]\n",
    "toml-budget-text": 'budget_s = "fast"\n',
    "toml-max-error-zero": "max_error_elements = 0\n",
    "toml-budget-inf": "budget_s = inf\n",
    "toml-allocator": 'allocator = "tcmalloc"\n',
}


def test_there_are_at_least_40_bad_inputs():
    assert len(BAD) >= 40 and len({b[0] for b in BAD}) == len(BAD)


@pytest.mark.parametrize("name, argv, words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_naming_the_value_with_a_hint(cli, tiny_run, tmp_path, name, argv, words):
    toml = tmp_path / "c.toml"
    text = TOMLS.get(name, 'variants = ["naive"]\n')
    toml.write_bytes(text if isinstance(text, bytes) else text.encode())
    subs = {"{tmp}": str(tmp_path), "{toml}": str(toml), "{run}": str(tiny_run)}
    args = []
    for a in argv:
        for key, value in subs.items():
            a = a.replace(key, value)
        args.append(a)
    rc, out, err = cli(*args)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, (rc, err)
    line = lines[0]
    assert line.startswith("attnbench"), line
    for word in words:
        assert word.replace("{tmp}", str(tmp_path)) in line, (word, line)
    assert any(h in line for h in ("hint", "valid", "choose from")), line


def test_pattern_parameter_flags_are_axes_crossed_with_their_patterns(cli, tiny, tmp_path):
    """The good side of the flags above: lists, crossed only with the patterns that take them, one
    column each in the rows, lists in run.json."""
    axes = [a for a in tiny if a not in ("--patterns", "global")]
    rc, out, err = cli("sweep", *axes, "--patterns", "global,sink,topk", "--window", "4,8", "--sinks", "2",
                       "--stride", "2,3", "--topk", "3,5", "--inputs", "random", "--out",
                       tmp_path / "r", "--quiet")
    assert rc == 0 and "Traceback" not in out + err, err
    df, meta = load_run(tmp_path / "r")
    assert sorted(df["pattern_label"] if "pattern_label" in df else df["case_id"].str.split("/").str[1]) == [
        "global", "sink(w=4,s=2)", "sink(w=8,s=2)", "topk(k=3)", "topk(k=5)"]
    assert (df["status"] == "ok").all(), df[["case_id", "status", "reason"]]
    sink = df[df["pattern"] == "sink"]
    assert sorted(sink["window"].tolist()) == [4, 8] and (sink["sinks"] == 2).all() and sink["topk"].isna().all()
    assert df.loc[df["pattern"] == "global", ["window", "sinks", "stride", "globals", "topk"]].isna().all().all()
    sweep = meta["sweep"]
    assert (sweep["window"], sweep["sinks"], sweep["stride"], sweep["topk"], sweep["layers"], sweep["inputs"]) == (
        [4, 8], [2], [2, 3], [3, 5], [], ["random"])
    assert (df["inputs"] == "random").all() and df["inputs_layer"].isna().all()


# ---- faults: each a row with a status and a reason ----------------------------------------------
class _Misbehave(Variant):
    """Misbehaves on purpose, by its `mode` parameter (registered for one test at a time: no leak into
    tests that sweep every variant)."""

    name = "test_misbehave"
    description = "test variant: ok, raise, oom, alloc or sleep"
    patterns = ("global",)
    default_params = {"mode": "ok"}

    def forward(self, q, k, v, pattern):
        mode = self.params["mode"]
        if mode == "raise":
            raise ValueError("deliberate failure")
        if mode == "oom":
            raise torch.OutOfMemoryError("deliberate out of memory")
        if mode == "alloc":
            return torch.empty(1 << 46, dtype=torch.uint8)  # 64 TiB: the allocator refuses
        if mode == "sleep":
            time.sleep(0.3)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=pattern.causal)


@pytest.fixture
def misbehave(monkeypatch):
    monkeypatch.setitem(REGISTRY, _Misbehave.name, _Misbehave)
    return _Misbehave.name


FAULTS = [
    # (id, TOML text, axis options, the status every row must have, words in the reason)
    ("raise", '[params.test_misbehave]\nmode = "raise"\n', ["--variants", "test_misbehave"], "error",
     "deliberate failure"),
    ("oom-raised", '[params.test_misbehave]\nmode = "oom"\n', ["--variants", "test_misbehave"], "oom",
     "deliberate out of memory"),
    ("alloc-refused", '[params.test_misbehave]\nmode = "alloc"\n', ["--variants", "test_misbehave"], "oom", ""),
    ("timeout", '[params.test_misbehave]\nmode = "sleep"\n', ["--variants", "test_misbehave", "--timeout-s", "0.1"],
     "timeout", "--timeout-s 0.1"),
    ("too-big-for-memory", 'variants = ["naive"]\n', ["--seq-lens", "1000000000", "--passes", "fwd,fwd_bwd"], "oom",
     "GiB"),
    ("unsupported-dtype", 'variants = ["naive"]\n', ["--dtypes", "float64"], "unsupported", "dtype=float64"),
    ("unsupported-pattern", 'variants = ["local"]\n', ["--patterns", "global"], "unsupported", "pattern=global"),
    ("unsupported-device", 'variants = ["xformers", "sdpa_cudnn"]\n', ["--all-cells"], "unsupported", "CPU"),
]


@pytest.mark.parametrize("name, toml_text, extra, status, words", FAULTS, ids=[f[0] for f in FAULTS])
def test_faults_are_rows_with_a_status_and_reason(cli, tiny, misbehave, tmp_path, name, toml_text, extra,
                                                   status, words):
    toml = tmp_path / "c.toml"
    toml.write_text(toml_text)
    axes = [a for a in tiny if a not in ("--variants", "naive")]  # the config or `extra` names the variants
    rc, out, err = cli("sweep", "--config", toml, *axes, *extra, "--causal", "both", "--out", tmp_path / "r",
                       "--quiet")
    assert rc == 0 and "Traceback" not in out + err, err
    df, meta = load_run(tmp_path / "r")
    planned = len(meta["sweep"]["variants"]) * 2 * len(meta["sweep"]["passes"])  # x causal no/yes
    assert len(df) == planned and df["case_id"].is_unique  # nothing lost, nothing duplicated
    assert set(df["status"]) <= set(STATUSES)
    assert (df["status"] == status).all(), df[["case_id", "status", "reason"]]
    assert df["reason"].str.len().gt(0).all() and df["reason"].str.lower().str.contains(words.lower(), regex=False).all()
