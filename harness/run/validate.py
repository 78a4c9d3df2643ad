"""A raw mapping (preset or user TOML, command-line overrides, run.json's ``sweep``) validated into a
frozen ``SweepConfig``: every value type-checked before anything runs, a bad one an ``InputError``
naming the key, the value and what would work."""

from __future__ import annotations

import math
import re
import tomllib
from importlib import resources
from pathlib import Path

import torch

from harness.bench.heap import ALLOCATORS
from harness.core.case import DEVICES, DTYPES, PASSES
from harness.core.errors import InputError
from harness.core.patterns import PATTERN_KINDS
from harness.core.registry import LOAD_ERRORS, discover, unknown_variant
from harness.run.config import EXECUTION_KEYS, GRID_KEYS, Execution, Grid, SweepConfig, lengths
from harness.run.inputs import resolve_inputs
from harness.run.presets import preset_names

# empty: as many kv heads as heads; square cases; seq_lens; all cores; the default layers
OPTIONAL_AXES = ("kv_heads", "q_lens", "kv_lens", "threads", "layers")
PATTERN_AXES = ("window", "segment", "sinks", "stride", "globals", "topk")  # the patterns' parameters
LIST_KEYS = ("variants", "patterns", "causal", "seq_lens", "heads", "kv_heads", "q_lens", "kv_lens", "docs", "threads",
             "batch", "head_dims", "dtypes", "passes", *PATTERN_AXES, "layers", "inputs")
SINGULAR = {"patterns": "pattern", "dtypes": "dtype", "passes": "pass"}


def load_toml(path_or_preset: str, is_preset: bool) -> dict:
    """A preset's or a TOML file's keys (not yet validated); ``name`` defaults to the preset or file name."""
    if is_preset:
        names = preset_names()
        if path_or_preset not in names:
            raise InputError(f"unknown preset {path_or_preset!r}; valid presets: {', '.join(names)}")
        text = resources.files("harness.run.presets").joinpath(f"{path_or_preset}.toml").read_text()
        source = f"preset {path_or_preset}"
    else:
        path = Path(path_or_preset)
        hint = f"hint: copy a preset from harness/run/presets/ ({', '.join(preset_names())})"
        if not path.exists():
            raise InputError(f"config file {path_or_preset!r} does not exist; {hint}")
        if not path.is_file():
            raise InputError(f"config file {path_or_preset!r} is not a file; {hint}")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"config file {path_or_preset!r} is not UTF-8 text ({exc.reason} at byte "
                             f"{exc.start}); {hint}") from None
        except OSError as exc:
            raise InputError(f"cannot read config file {path_or_preset!r}: {exc.strerror or exc}; {hint}") from None
        source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source} is not valid TOML: {str(exc).splitlines()[0]}; hint: see the presets in "
                         "harness/run/presets/ for the syntax") from None
    data.setdefault("name", path_or_preset if is_preset else safe_name(Path(path_or_preset).stem))
    return data


NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def safe_name(text: str) -> str:
    """``text`` as a run name: letters, digits, '.', '_' and '-' (others become '-'), at most 64 characters."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:64]
    return name or "custom"


def _type_name(value) -> str:
    return type(value).__name__


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Per list key: (item check, what an item must be, an example of a good value).
_ITEM_TYPES = {
    "variants": (lambda v: isinstance(v, str), "variant names (strings)", 'variants = ["naive", "chunked"]'),
    "inputs": (lambda v: isinstance(v, str) and v.strip() != "", "input sources: random, smollm2 or the path of a "
               "q/k/v file", 'inputs = ["random", "smollm2"] (--inputs random,smollm2)'),
    "patterns": (lambda v: isinstance(v, str), "pattern names (strings)", 'patterns = ["global", "local"]'),
    "causal": (lambda v: isinstance(v, bool), "true or false", "causal = [false, true]"),
    "seq_lens": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "seq_lens = [512, 1024]"),
    "heads": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "heads = [8]"),
    "kv_heads": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "kv_heads = [8] (with heads = [32])"),
    "q_lens": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "q_lens = [1] (decoding)"),
    "kv_lens": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "kv_lens = [1024, 4096]"),
    "docs": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "docs = [4, 16]"),
    "threads": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "threads = [1, 2] (--threads 1,2)"),
    "batch": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "batch = [1, 4]"),
    "head_dims": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "head_dims = [64]"),
    "dtypes": (lambda v: isinstance(v, str), "dtype names (strings)", 'dtypes = ["float32"]'),
    "passes": (lambda v: isinstance(v, str), "pass names (strings)", 'passes = ["fwd", "fwd_bwd"]'),
    "window": (lambda v: _is_int(v) and v >= 1, "an integer >= 1", "window = [32, 128, 512] (--window 32,128,512)"),
    "segment": (lambda v: v == "sqrt" or (_is_int(v) and v >= 1), 'an integer >= 1 or "sqrt"',
                'segment = [16, "sqrt"] (--segment 16,sqrt)'),
    "sinks": (lambda v: _is_int(v) and v >= 1, "an integer >= 1", "sinks = [4] (--sinks 4)"),
    "stride": (lambda v: _is_int(v) and v >= 1, "an integer >= 1", "stride = [2, 4] (--stride 2,4)"),
    "globals": (lambda v: _is_int(v) and v >= 1, "an integer >= 1", "globals = [4] (--globals 4)"),
    "topk": (lambda v: _is_int(v) and v >= 1, "an integer >= 1", "topk = [32, 64] (--topk 32,64)"),
    "layers": (lambda v: _is_int(v) and v >= 0, "integers >= 0", "layers = [0, 15, 29] (--layers 0,15,29)"),
}


def _pattern_axis_hint(key: str, item, example: str) -> str:
    """A hint for a bad item of a pattern's parameter axis, fitted to what was given."""
    if isinstance(item, bool):
        return f"{key} takes numbers, not true or false: {example}"
    if isinstance(item, float) and math.isfinite(item):
        return f"whole numbers only, e.g. {key} = [{max(1, round(item))}]"
    if isinstance(item, str):
        text = item.strip()
        if "," in text:
            return f"a TOML list, not a comma-separated string: {example}"
        if text.lstrip("-").isdigit():
            return f"a number, not a string: {key} = [{text}]" + (' or [16, "sqrt"]' if key == "segment" else "")
    return example


def _bad(key: str, value, expected: str, example: str) -> InputError:
    return InputError(f"{key} must be {expected}, got {value!r} ({_type_name(value)}); hint: {example}")


def _list_value(key: str, value) -> list:
    """A list key's items, type-checked, duplicates dropped (first kept, order kept)."""
    check, expected, example = _ITEM_TYPES[key]
    items = list(value) if isinstance(value, (list, tuple)) else [value]  # a scalar is a one-element list
    for item in items:
        if not check(item):
            if key in PATTERN_AXES:  # one pattern parameter at a time: "window must be an integer >= 1, got 0"
                raise InputError(f"{key} must be {expected}, got {item!r} ({_type_name(item)}); "
                                 f"hint: {_pattern_axis_hint(key, item, example)}")
            raise _bad(key, item, expected if isinstance(value, (list, tuple)) else f"{expected} (or a list of them)",
                       example)
    out = []
    for item in items:
        if item not in out:  # bools and ints are never mixed here (checked above)
            out.append(item)
    if not out and key not in OPTIONAL_AXES:
        raise InputError(f"{key} is empty; give at least one value; hint: {example}")
    return out


_SECONDS_EXAMPLES = {"budget_s": "budget_s = 0.2 (--budget-s 0.2)", "timeout_s": "timeout_s = 300 (--timeout-s 300)"}


def _seconds(key: str, value) -> float:
    """A finite, positive number of seconds (nan, inf and booleans are refused)."""
    example = _SECONDS_EXAMPLES[key]
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        if key == "timeout_s" and _is_number(value) and value == math.inf:
            example += "; there is no 'no limit': give a long bound such as 86400 (a day)"
        raise _bad(key, value, "a finite number of seconds > 0", example)
    return float(value)


def _count(values: dict, key: str, least: int, example: str) -> None:
    value = values.get(key, getattr(Execution, key))
    if not _is_int(value) or value < least:
        raise _bad(key, value, f"an integer >= {least}", example)


def _params(value, registry: dict) -> tuple:
    """``[params.<variant>]`` tables, each value checked against the variant's default (Variant.__init__)."""
    example = "[params.chunked] chunk_q = 256"
    if not isinstance(value, dict):
        raise _bad("params", value, "a table of tables, one per variant", example)
    out = []
    for vname, p in value.items():
        if not isinstance(p, dict):
            raise _bad(f"params.{vname}", p, "a table of parameter = value", example)
        _known(vname, registry, what="params given for")
        registry[vname](**p)  # rejects unknown names and values of the wrong type
        out.append((vname, tuple(sorted(p.items()))))
    return tuple(sorted(out))


def _known(name: str, registry: dict, what: str = "") -> None:
    """An unknown variant is an InputError (a broken plug-in's says why it failed to load)."""
    if name in registry:
        return
    exc = unknown_variant(name, registry)
    if name in LOAD_ERRORS:
        raise exc
    raise InputError(f"{what} {exc}" if what else f"{exc} (or all)")


def build_config(data: dict, explicit: set[str] | None = None) -> SweepConfig:
    """Validate a raw mapping into a frozen config, resolving 'auto' and 'all'. Keys are the grid's and
    the execution's (``GRID_KEYS``, ``EXECUTION_KEYS``), flat, as ``SweepConfig.to_dict`` writes them.
    Duplicate axis values are dropped (first kept, order kept). ``explicit``: the keys the user set (the
    rest came from a preset, which real inputs may reshape: ``harness.run.inputs``); None: all of them."""
    if not isinstance(data, dict):
        raise InputError(f"a sweep configuration must be a table of keys, got {_type_name(data)}")
    valid = (*GRID_KEYS, *EXECUTION_KEYS)
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise InputError(f"unknown sweep key {unknown[0]!r}; valid keys: {', '.join(valid)}")
    values = dict(data)
    _grid_values(values)
    _execution_values(values)
    grid = resolve_inputs(Grid(**{k: v for k, v in values.items() if k in GRID_KEYS}),
                          given=set(data) if explicit is None else explicit)
    config = SweepConfig(grid, Execution(**{k: v for k, v in values.items() if k in EXECUTION_KEYS}))
    _check_shapes(grid)
    return config


def _grid_values(values: dict) -> None:
    for key in LIST_KEYS:
        if key in values:
            values[key] = _list_value(key, values[key])
    device = values.get("device", "cpu")
    if not isinstance(device, str):
        raise _bad("device", device, "a string: cpu, cuda or auto", 'device = "cpu"')
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)} (or auto)")
    values["device"] = device
    if list(values.get("dtypes", [])) == ["auto"]:
        values["dtypes"] = ["float16"] if device == "cuda" else ["float32"]
    registry = discover()
    variants = list(values.get("variants", ["all"]))
    if "all" in variants and variants != ["all"]:
        raise InputError(f"variants {variants} mix 'all' with names; 'all' stands alone; hint: --variants all, or "
                         "list the names (attnbench list shows them)")
    if variants == ["all"]:
        variants = list(registry)
    for name in variants:
        _known(name, registry)
    values["variants"] = variants
    checks = {"patterns": PATTERN_KINDS, "dtypes": tuple(DTYPES), "passes": PASSES}
    for key, valid in checks.items():
        for item in values.get(key, []):
            if item not in valid:
                raise InputError(f"unknown {SINGULAR[key]} {item!r}; valid {key}: {', '.join(valid)}")
    mee = values.get("max_error_elements", 1)
    if not _is_int(mee) or mee < 1:
        raise _bad("max_error_elements", mee, "an integer >= 1", "max_error_elements = 67108864")
    name = values.get("name", Grid.name)
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise _bad("name", name, "a plain run name of letters, digits, '.', '_' and '-' (at most 64, no '/' or "
                   "leading '.')", 'name = "my-sweep"')
    if "params" in values:
        values["params"] = _params(values["params"], registry)
    if not isinstance(values.get("all_cells", False), bool):
        raise _bad("all_cells", values["all_cells"], "true or false", "all_cells = true (--all-cells)")
    for key in LIST_KEYS:
        if key in values:
            values[key] = tuple(values[key])


def _optional_number(values: dict, key: str, expected: str, example: str) -> None:
    """``values[key]``, when set, as a float: finite and >= 0, else a one-line error naming it."""
    value = values.get(key)
    if value is None:
        return
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise _bad(key, value, expected, example)
    values[key] = float(value)


def _execution_values(values: dict) -> None:
    for key in ("budget_s", "timeout_s"):
        if key in values:
            values[key] = _seconds(key, values[key])
    _count(values, "retries", 0, "retries = 2 (--retries 2; 0: measure each cell once)")
    _count(values, "ceiling_retries", 0, "ceiling_retries = 2 (--ceiling-retries 2; 0: measure the ceiling "
                                         "only at the start and the end)")
    _count(values, "recheck_retries", 0, "recheck_retries = 2 (--recheck-retries 2; 0: no end-of-run re-check)")
    _count(values, "rounds", 1, "rounds = 3 (--rounds 3: every cell measured in 3 rounds over the run; 1: once)")
    _count(values, "short_rounds", 1, "short_rounds = 3 (--short-rounds 3: CPU cells with short calls measured in "
                                      "3 rounds at least; 1: as rounds says)")
    _optional_number(values, "recheck_wait_s", "a finite number of seconds >= 0",
                     "recheck_wait_s = 120 (--recheck-wait-s 120; 0: no waiting beyond 5 s; unset: 15% of the "
                     "time the cases took, 5 to 300 s)")
    if values.get("trust_budget") in ("inf", math.inf):  # TOML's inf, or --trust-budget inf: unbounded
        values["trust_budget"] = None
    _optional_number(values, "trust_budget", "a finite number >= 0, or inf",
                     f"trust_budget = {Execution.trust_budget:g} (--trust-budget {Execution.trust_budget:g}, the "
                     f"default: re-measuring and waiting for quiet may take {Execution.trust_budget:g}x the first "
                     "pass's time; 0: none; inf: unbounded)")
    allocator = values.get("allocator", Execution.allocator)
    if allocator not in ALLOCATORS:
        raise _bad("allocator", allocator, f"one of {', '.join(ALLOCATORS)}",
                   'allocator = "steady" (--allocator steady: freed memory stays in the process, so no timed call '
                   'faults pages; "system": the C library\'s defaults)')
    if "isolate" in values and not isinstance(values["isolate"], bool):
        raise _bad("isolate", values["isolate"], "true or false", "isolate = true (--isolate)")
    if "compile_ahead" in values and not isinstance(values["compile_ahead"], bool):
        raise _bad("compile_ahead", values["compile_ahead"], "true or false",
                   "compile_ahead = false (--no-compile-ahead)")
    _check_executor(values)


def _check_executor(values: dict) -> None:
    executor = values.get("executor", Execution.executor)
    if executor not in ("local", "ray"):
        raise InputError(f"unknown executor {executor!r}; valid executors: local, ray")
    address, cpus = values.get("ray_address"), values.get("ray_cpus_per_case")
    if address is not None and not isinstance(address, str):
        raise _bad("ray_address", address, "a string: auto or host:port", "--ray-address 10.0.0.1:6379")
    if cpus is not None and (not _is_int(cpus) or cpus < 1):
        raise InputError(f"--ray-cpus-per-case must be an integer >= 1, got {cpus!r}")
    if executor != "ray" and (address is not None or cpus is not None):
        flag = "--ray-address" if address is not None else "--ray-cpus-per-case"
        raise InputError(f"{flag} applies to the Ray executor only; hint: add --executor ray")
    rounds = values.get("rounds", Execution.rounds)
    if executor == "ray" and rounds > 1:
        raise InputError(f"--rounds {rounds} applies to the local executor only (a Ray run measures each cell "
                         "once); hint: drop --rounds, or run without --executor ray")


def _check_shapes(grid: Grid) -> None:
    """Axis combinations that make no case: one line naming the values, before anything runs."""
    for h in grid.heads:
        for kvh in grid.kv_heads:
            if h % kvh:
                raise InputError(f"heads={h} is not divisible by kv_heads={kvh}; hint: query heads come in equal "
                                 "groups per key/value head, e.g. heads = [32] with kv_heads = [8]")
    for q, kv in lengths(grid):
        if q is not None and q > kv:
            raise InputError(f"q_len={q} is larger than kv_len={kv}; queries sit at the end of the keys, hint: "
                             "q_lens no larger than every kv_len (q_lens = [1] for decoding)")
        if "document" in grid.patterns:
            for k in grid.docs:
                if k > kv:
                    raise InputError(f"docs={k} is more documents than kv_len={kv} positions; hint: docs <= kv_len")
