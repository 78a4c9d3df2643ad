"""A sweep config refuses what it cannot use: wrong types, non-finite seconds, unsafe run names and
variant parameters of the wrong type, each named in a one-line error with a hint."""

from __future__ import annotations

import collections
import json
import math

import pytest
import torch

from harness.core.errors import InputError
from harness.core.registry import Variant, get_variant
from harness.run.config import SweepConfig, expand
from harness.run.validate import build_config, load_toml


def _one_line_error_naming(data: dict, words: list[str]) -> None:
    """``build_config(data)`` fails with one line that has a hint and every one of ``words``."""
    with pytest.raises(InputError) as info:
        build_config(data)
    msg = str(info.value)
    assert "\n" not in msg and "hint" in msg
    for word in words:
        assert word in msg, (word, msg)


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
    _one_line_error_naming(data, words)


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
    with pytest.raises(InputError, match="chunk_q must be an integer >= 1 or 'auto', got 'big' \\(str\\)"):
        get_variant("chunked", chunk_q="big")


@pytest.mark.parametrize("key, value", [("timeout_s", math.nan), ("timeout_s", math.inf), ("budget_s", math.nan),
                                        ("budget_s", math.inf), ("budget_s", -1.0), ("timeout_s", 0)])
def test_non_finite_or_non_positive_seconds_are_refused(key, value):
    with pytest.raises(InputError, match=f"{key} must be a finite number of seconds > 0, got {value!r}"):
        build_config({key: value})


def test_run_names_cannot_leave_results(tmp_path):
    for name in ("../../../escaped", "a/b", ".hidden", "", "x" * 65):
        with pytest.raises(InputError, match="name must be a plain run name"):
            build_config({"name": name})
    toml = tmp_path / "my sweep (v2).toml"
    toml.write_text('variants = ["naive"]\n')
    assert load_toml(str(toml), False)["name"] == "my-sweep-v2"  # a file's stem is made safe, not refused
    assert build_config(load_toml(str(toml), False)).grid.name == "my-sweep-v2"


# ---- the patterns' parameters are sweep axes ---------------------------------------------------
def test_pattern_parameters_are_list_axes():
    cfg = build_config({"window": [32, 128, 512], "segment": [16, "sqrt", 16], "sinks": [4], "stride": [2, 4],
                        "globals": 4, "topk": [32, 64]})
    g = cfg.grid
    assert (g.window, g.segment, g.sinks, g.stride, g.globals, g.topk) == (
        (32, 128, 512), (16, "sqrt"), (4,), (2, 4), (4,), (32, 64))
    d = cfg.to_dict()
    assert (d["window"], d["segment"], d["inputs"]) == ([32, 128, 512], [16, "sqrt"], ["random"])
    assert build_config(json.loads(json.dumps(d))) == cfg  # run.json round trip
    defaults = build_config({}).grid
    assert (defaults.window, defaults.segment, defaults.sinks, defaults.stride, defaults.globals, defaults.topk,
            defaults.inputs, defaults.layers) == ((128,), ("sqrt",), (4,), (2,), (4,), (64,), ("random",), ())


# ---- real inputs bring their own shape -----------------------------------------------------------
@pytest.fixture
def qkv_file(tmp_path):
    pytest.importorskip("safetensors", reason="safetensors is not installed (the quality extra)")
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    path = tmp_path / "qkv.safetensors"
    save_file({"q": torch.randn(1, 6, 48, 16, generator=gen), "k": torch.randn(1, 2, 48, 16, generator=gen),
               "v": torch.randn(1, 2, 48, 16, generator=gen)}, str(path))
    return str(path)


def test_a_file_of_inputs_sets_the_shape_of_every_input_source(qkv_file):
    cfg = build_config({"inputs": [qkv_file, "random"], "variants": ["naive"], "patterns": ["local"],
                        "seq_lens": [32, 48], "window": [4], "heads": [8], "head_dims": [64]},
                       explicit={"inputs", "variants", "patterns", "seq_lens", "window"})  # heads: a preset's
    g = cfg.grid
    assert (g.heads, g.kv_heads, g.head_dims) == ((6,), (2,), (16,))
    cases = expand(cfg)
    sources = {(c.inputs, c.inputs_layer) for c in cases}
    assert len(sources) == 2 and ("random", None) in sources
    real = next(s for s, _ in sources if s != "random")
    assert real.startswith("file:") and all(c.heads == 6 and c.kv_heads == 2 and c.head_dim == 16 for c in cases)
    assert len({c.id for c in cases}) == len(cases) == 4  # the source and layer are part of the id
    assert build_config(json.loads(json.dumps(cfg.to_dict()))) == cfg  # a resume rebuilds the same grid


@pytest.mark.parametrize("extra, words", [
    ({"heads": [8]}, ["heads = [8] contradicts inputs file:", "heads = [6]", "hint: drop heads"]),
    ({"seq_lens": [64]}, ["64", "48"]),
    ({"inputs": ["random"], "layers": [0]}, ["layers [0] apply to real inputs only", "hint"]),
    ({"layers": [3]}, ["layer", "3"]),
])
def test_real_inputs_refuse_what_they_cannot_give(qkv_file, extra, words):
    data = {"inputs": [qkv_file], "seq_lens": [32], **extra}
    with pytest.raises(InputError) as info:
        build_config(data)
    msg = str(info.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_an_older_run_json_with_scalar_window_and_segment_is_the_same_grid():
    old = SweepConfig().to_dict()
    for key in ("sinks", "stride", "globals", "topk", "inputs", "layers"):
        del old[key]  # an older run.json has no such keys
    old.update(window=64, segment="sqrt")  # and stores these two as scalars
    stored = build_config(old)
    assert stored.grid.window == (64,) and stored.grid.segment == ("sqrt",)
    given = build_config({**SweepConfig().to_dict(), "window": [64], "segment": ["sqrt"]})
    assert stored.grid.same_cases(given.grid) == [] and expand(stored) == expand(given)
    assert stored.grid.same_cases(build_config({**old, "window": [64, 128]}).grid) == ["window"]
    assert build_config({**old, "segment": 32}).grid.segment == (32,)


@pytest.mark.parametrize("data, words", [
    ({"window": []}, ["window is empty", "hint", "--window 32,128,512"]),
    ({"segment": []}, ["segment is empty"]),
    ({"topk": []}, ["topk is empty"]),
    ({"window": [32, 0]}, ["window must be an integer >= 1, got 0"]),
    ({"window": [2.5]}, ["window", "2.5", "float", "whole numbers", "window = [2]"]),
    ({"sinks": ["4"]}, ["sinks", "'4'", "str", "a number, not a string: sinks = [4]"]),
    ({"stride": "2,4"}, ["stride", "'2,4'", "a TOML list"]),
    ({"globals": [True]}, ["globals", "True", "bool", "not true or false"]),
    ({"topk": [-1]}, ["topk", "-1", "integer >= 1"]),
    ({"segment": ["sqrt", "16"]}, ["segment", "'16'", "sqrt", "a number, not a string"]),
    ({"segment": [0]}, ["segment", "0", '"sqrt"']),
    ({"layers": [0, -1]}, ["layers", "-1", "integers >= 0"]),
    ({"layers": [1.5]}, ["layers", "1.5", "float"]),
    ({"inputs": ""}, ["inputs", "''", "input sources"]),
    ({"inputs": 3}, ["inputs", "3", "int"]),
])
def test_bad_pattern_axes_are_named(data, words):
    _one_line_error_naming(data, words)


def test_empty_layers_mean_the_default():
    assert build_config({"layers": []}).grid.layers == ()


def test_expand_crosses_each_pattern_with_its_own_axes_only():
    axes = {"window": [8, 16, 32], "sinks": [1, 4], "stride": [2, 3], "globals": [2, 5], "topk": [4, 8, 16],
            "segment": [4, "sqrt"]}
    cfg = build_config({"variants": ["naive"], "patterns": ["global", "local", "sink", "dilated", "bigbird",
                                                             "hierarchical", "topk", "document"],
                        "causal": [False, True], "seq_lens": [64, 256], "heads": [1], "head_dims": [8], **axes})
    cases = expand(cfg)
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)) and len(set(cases)) == len(cases)
    per = collections.Counter(c.pattern for c in cases)
    lengths_causal = 2 * 2  # seq_lens x causal
    assert per["global"] == per["document"] == lengths_causal
    assert per["local"] == 3 * lengths_causal
    assert per["sink"] == per["dilated"] == per["bigbird"] == 3 * 2 * lengths_causal
    assert per["topk"] == 3 * lengths_causal
    assert per["hierarchical"] == 2 * lengths_causal  # 4 and sqrt(64) = 8; 4 and sqrt(256) = 16
    sinks = {(c.window, c.sinks) for c in cases if c.pattern == "sink"}
    assert sinks == {(w, s) for w in axes["window"] for s in axes["sinks"]}
    assert all(c.stride is None and c.globals is None and c.topk is None and c.segment is None
               for c in cases if c.pattern == "sink")
    assert all(c.window is None for c in cases if c.pattern in ("global", "topk", "hierarchical", "document"))


def test_segment_values_that_meet_make_one_case():
    cfg = build_config({"variants": ["naive"], "patterns": ["hierarchical"], "seq_lens": [64, 100], "heads": [1],
                        "head_dims": [8], "segment": [8, "sqrt", 10]})
    segments = [(c.seq_len, c.segment) for c in expand(cfg)]
    assert segments == [(64, 8), (64, 10), (100, 8), (100, 10)]  # sqrt(64) = 8, sqrt(100) = 10: no duplicates


def test_one_window_value_changes_no_case_id_of_the_older_patterns():
    base = {"variants": ["naive"], "patterns": ["global", "local", "hierarchical"], "seq_lens": [64], "heads": [1],
            "head_dims": [8]}
    older = [c.id for c in expand(build_config({**base, "window": 16, "segment": "sqrt"}))]
    assert older == ["naive/global/cpu/float32/b1h1n64d8/fwd", "naive/local(w=16)/cpu/float32/b1h1n64d8/fwd",
                     "naive/hierarchical(s=8)/cpu/float32/b1h1n64d8/fwd"]
    assert [c.id for c in expand(build_config({**base, "window": [16], "sinks": [1, 2], "topk": [3]}))] == older
