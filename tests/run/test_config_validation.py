"""A sweep config refuses what it cannot use: wrong types, non-finite seconds, unsafe run names and
variant parameters of the wrong type, each named in a one-line error with a hint."""

from __future__ import annotations

import math

import pytest

from harness.core.errors import InputError
from harness.core.registry import Variant, get_variant
from harness.run.validate import build_config, load_toml


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
