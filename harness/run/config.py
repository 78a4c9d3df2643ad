"""Sweeps: a frozen configuration (preset TOML, user TOML, CLI overrides) expanded into cases, and the
runner that measures every case into one tidy row, whatever happens.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from harness.bench.heap import ALLOCATORS
from harness.core.case import DEVICES, DTYPES, PASSES, Case
from harness.core.errors import InputError
from harness.core.patterns import PATTERN_KINDS, make_doc_lens
from harness.core.registry import LOAD_ERRORS, discover, unknown_variant
from harness.run.presets import preset_names


@dataclass(frozen=True)
class SweepConfig:
    device: str = "cpu"
    variants: tuple[str, ...] = ("all",)
    patterns: tuple[str, ...] = ("global",)
    causal: tuple[bool, ...] = (False,)
    seq_lens: tuple[int, ...] = (1024,)
    heads: tuple[int, ...] = (8,)
    kv_heads: tuple[int, ...] = ()  # key/value heads (grouped-query); empty: as many as query heads
    q_lens: tuple[int, ...] = ()  # query lengths (decoding: 1); empty: square cases, q_len = kv_len
    kv_lens: tuple[int, ...] = ()  # key/value lengths; empty: seq_lens
    docs: tuple[int, ...] = (4,)  # documents per sequence, for the document pattern
    threads: tuple[int, ...] = ()  # torch's intra-op threads on CPU; empty: all cores
    batch: tuple[int, ...] = (1,)
    head_dims: tuple[int, ...] = (64,)
    dtypes: tuple[str, ...] = ("float32",)
    passes: tuple[str, ...] = ("fwd",)
    window: int = 128
    segment: int | str = "sqrt"
    budget_s: float = 0.2
    timeout_s: float = 300.0
    isolate: bool = False
    retries: int = 2  # re-measurements of a cell whose own evidence flags it (harness.analysis.trust)
    rounds: int = 1  # times every cell is measured over the run, the fastest kept (harness.analysis.rounds)
    recheck_wait_s: float | None = None  # the end-of-run re-check's waits for quiet, in all; None: recheck_wait_budget_s
    allocator: str = "steady"  # the host allocator's state while measuring (harness.bench.heap.ALLOCATORS)
    max_error_elements: int = 2**26
    params: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()  # per-variant parameters
    name: str = "custom"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["params"] = {v: dict(p) for v, p in self.params}
        return d

    def segment_for(self, n: int) -> int:
        return max(1, round(math.sqrt(n))) if self.segment == "sqrt" else int(self.segment)


FIELDS = {f.name: f for f in dataclasses.fields(SweepConfig)}


OPTIONAL_AXES = ("kv_heads", "q_lens", "kv_lens", "threads")  # empty: as many kv heads as heads; square cases; seq_lens
LIST_KEYS = ("variants", "patterns", "causal", "seq_lens", "heads", "kv_heads", "q_lens", "kv_lens", "docs", "threads", "batch",
             "head_dims", "dtypes", "passes")


def load_toml(path_or_preset: str, is_preset: bool) -> dict:
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
    "patterns": (lambda v: isinstance(v, str), "pattern names (strings)", 'patterns = ["global", "local"]'),
    "causal": (lambda v: isinstance(v, bool), "true or false", "causal = [false, true]"),
    "seq_lens": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "seq_lens = [512, 1024]"),
    "heads": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "heads = [8]"),
    "kv_heads": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "kv_heads = [8] (with heads = [32])"),
    "q_lens": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "q_lens = [1] (decoding)"),
    "kv_lens": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "kv_lens = [1024, 4096]"),
    "docs": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "docs = [4, 16]"),
    "threads": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "threads = [1, 2] (--threads 1,2)"),
    "batch": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "batch = [1]"),
    "head_dims": (lambda v: _is_int(v) and v >= 1, "integers >= 1", "head_dims = [64]"),
    "dtypes": (lambda v: isinstance(v, str), "dtype names (strings)", 'dtypes = ["float32"]'),
    "passes": (lambda v: isinstance(v, str), "pass names (strings)", 'passes = ["fwd", "fwd_bwd"]'),
}


def _bad(key: str, value, expected: str, example: str) -> InputError:
    return InputError(f"{key} must be {expected}, got {value!r} ({_type_name(value)}); hint: {example}")


def _list_value(key: str, value) -> list:
    """A list key's items, type-checked, duplicates dropped (first kept, order kept)."""
    check, expected, example = _ITEM_TYPES[key]
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not check(item):
            raise _bad(key, item, expected if isinstance(value, (list, tuple)) else f"{expected} (or a list of them)",
                       example)
    out = []
    for item in items:
        if item not in out:  # bools and ints are never mixed here (checked above)
            out.append(item)
    if not out and key not in OPTIONAL_AXES:
        raise InputError(f"{key} is empty; give at least one value; hint: {example}")
    return out


def _seconds(key: str, value) -> float:
    """A finite, positive number of seconds (nan, inf and booleans are refused)."""
    example = {"budget_s": "budget_s = 0.2 (--budget-s 0.2)", "timeout_s": "timeout_s = 300 (--timeout-s 300)"}[key]
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        if key == "timeout_s" and _is_number(value) and value == math.inf:
            example += "; there is no 'no limit': give a long bound such as 86400 (a day)"
        raise _bad(key, value, "a finite number of seconds > 0", example)
    return float(value)


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


def build_config(data: dict) -> SweepConfig:
    """Validate a raw mapping (TOML + overrides) into a frozen config, resolving 'auto' and 'all'.

    Every value is type-checked before anything runs: a wrong type is an InputError naming the key,
    the value and what it must be. Duplicate axis values are dropped (first kept, order kept).
    """
    if not isinstance(data, dict):
        raise InputError(f"a sweep configuration must be a table of keys, got {_type_name(data)}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InputError(f"unknown sweep key {unknown[0]!r}; valid keys: {', '.join(FIELDS)}")
    values = dict(data)
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
    if variants == ["all"]:
        variants = list(registry)
    for name in variants:
        _known(name, registry)
    values["variants"] = variants
    checks = {"patterns": PATTERN_KINDS, "dtypes": tuple(DTYPES), "passes": PASSES}
    for key, valid in checks.items():
        for item in values.get(key, []):
            if item not in valid:
                raise InputError(f"unknown {key[:-1]} {item!r}; valid {key}: {', '.join(valid)}")
    window = values.get("window", 128)
    if not _is_int(window) or window < 1:
        raise _bad("window", window, "an integer >= 1", "window = 128 (--window 128)")
    segment = values.get("segment", "sqrt")
    if segment != "sqrt" and (not _is_int(segment) or segment < 1):
        raise _bad("segment", segment, 'an integer >= 1 or "sqrt"', 'segment = 64 or segment = "sqrt"')
    for key in ("budget_s", "timeout_s"):
        if key in values:
            values[key] = _seconds(key, values[key])
    retries = values.get("retries", 2)
    if not _is_int(retries) or retries < 0:
        raise _bad("retries", retries, "an integer >= 0", "retries = 2 (--retries 2; 0: measure each cell once)")
    wait = values.get("recheck_wait_s")
    if wait is not None and (not _is_number(wait) or not math.isfinite(wait) or wait < 0):
        raise _bad("recheck_wait_s", wait, "a finite number of seconds >= 0",
                   "recheck_wait_s = 120 (--recheck-wait-s 120; 0: no waiting beyond 5 s; unset: 15% of the "
                   "time the cases took, 5 to 300 s)")
    if wait is not None:
        values["recheck_wait_s"] = float(wait)
    rounds = values.get("rounds", 1)
    if not _is_int(rounds) or rounds < 1:
        raise _bad("rounds", rounds, "an integer >= 1",
                   "rounds = 3 (--rounds 3: every cell measured in 3 rounds over the run; 1: once)")
    allocator = values.get("allocator", "steady")
    if allocator not in ALLOCATORS:
        raise _bad("allocator", allocator, f"one of {', '.join(ALLOCATORS)}",
                   'allocator = "steady" (--allocator steady: freed memory stays in the process, so no timed call '
                   'faults pages; "system": the C library\'s defaults)')
    if "isolate" in values and not isinstance(values["isolate"], bool):
        raise _bad("isolate", values["isolate"], "true or false", "isolate = true (--isolate)")
    mee = values.get("max_error_elements", 1)
    if not _is_int(mee) or mee < 1:
        raise _bad("max_error_elements", mee, "an integer >= 1", "max_error_elements = 67108864")
    name = values.get("name", "custom")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise _bad("name", name, "a plain run name of letters, digits, '.', '_' and '-' (at most 64, no '/' or "
                   "leading '.')", 'name = "my-sweep"')
    if "params" in values:
        values["params"] = _params(values["params"], registry)
    for key in LIST_KEYS:
        if key in values:
            values[key] = tuple(values[key])
    config = SweepConfig(**values)
    _check_shapes(config)
    return config


def _check_shapes(config: SweepConfig) -> None:
    """Axis combinations that make no case: one line naming the values, before anything runs."""
    for h in config.heads:
        for kvh in config.kv_heads:
            if h % kvh:
                raise InputError(f"heads={h} is not divisible by kv_heads={kvh}; hint: query heads come in equal "
                                 "groups per key/value head, e.g. heads = [32] with kv_heads = [8]")
    for q, kv in lengths(config):
        if q is not None and q > kv:
            raise InputError(f"q_len={q} is larger than kv_len={kv}; queries sit at the end of the keys, hint: "
                             "q_lens no larger than every kv_len (q_lens = [1] for decoding)")
        if "document" in config.patterns:
            for k in config.docs:
                if k > kv:
                    raise InputError(f"docs={k} is more documents than kv_len={kv} positions; hint: docs <= kv_len")


def lengths(config: SweepConfig) -> list[tuple[int | None, int]]:
    """(q_len, kv_len) pairs of the sweep; q_len None means square (q_len = kv_len)."""
    kvs = config.kv_lens or config.seq_lens
    return [(q, kv) for kv in kvs for q in (config.q_lens or (None,))]


def expand(config: SweepConfig) -> list[Case]:
    """Axes to cases. Variants vary fastest, so the reference for one shape serves every variant."""
    registry = discover()
    cases = []
    outer = itertools.product(config.dtypes, config.passes, config.threads or (None,), config.batch, config.heads)
    for dtype, pass_, threads, b, h in outer:
        for kvh, d, (q_len, n), kind in itertools.product(config.kv_heads or (h,), config.head_dims, lengths(config),
                                                          config.patterns):
            for doc_lens, causal, name in itertools.product(_doc_axis(config, kind, n), config.causal,
                                                            config.variants):
                params = {**registry[name].default_params, **dict(dict(config.params).get(name, ()))}
                cases.append(Case(
                    variant=name, pattern=kind, causal=causal, window=config.window if kind == "local" else None,
                    segment=config.segment_for(n) if kind == "hierarchical" else None, device=config.device,
                    dtype=dtype, batch=b, heads=h, seq_len=n, head_dim=d, pass_=pass_, params=tuple(params.items()),
                    kv_heads=kvh, q_len=q_len, doc_lens=doc_lens, threads=threads))
    return cases


def _doc_axis(config: SweepConfig, kind: str, kv_len: int) -> list[tuple[int, ...] | None]:
    """Document lengths per ``docs`` value (fixed seed: reproducible), for the document pattern only."""
    if kind != "document":
        return [None]
    return [make_doc_lens(kv_len, k) for k in config.docs]
