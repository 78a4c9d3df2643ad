"""Sweeps: a frozen configuration (preset TOML, user TOML, CLI overrides) expanded into cases, and the
runner that measures every case into one tidy row, whatever happens.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from harness.core.case import DEVICES, DTYPES, PASSES, Case
from harness.core.errors import InputError
from harness.core.patterns import PATTERN_KINDS
from harness.core.registry import discover


@dataclass(frozen=True)
class SweepConfig:
    device: str = "cpu"
    variants: tuple[str, ...] = ("all",)
    patterns: tuple[str, ...] = ("global",)
    causal: tuple[bool, ...] = (False,)
    seq_lens: tuple[int, ...] = (1024,)
    heads: tuple[int, ...] = (8,)
    batch: tuple[int, ...] = (1,)
    head_dims: tuple[int, ...] = (64,)
    dtypes: tuple[str, ...] = ("float32",)
    passes: tuple[str, ...] = ("fwd",)
    window: int = 128
    segment: int | str = "sqrt"
    budget_s: float = 0.2
    timeout_s: float = 300.0
    isolate: bool = False
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


LIST_KEYS = ("variants", "patterns", "causal", "seq_lens", "heads", "batch", "head_dims", "dtypes", "passes")


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("harness.run.presets").iterdir()
                  if p.name.endswith(".toml"))


def load_toml(path_or_preset: str, is_preset: bool) -> dict:
    if is_preset:
        names = preset_names()
        if path_or_preset not in names:
            raise InputError(f"unknown preset {path_or_preset!r}; valid presets: {', '.join(names)}")
        text = resources.files("harness.run.presets").joinpath(f"{path_or_preset}.toml").read_text()
        source = f"preset {path_or_preset}"
    else:
        path = Path(path_or_preset)
        if not path.is_file():
            raise InputError(f"config file {path_or_preset!r} does not exist; hint: copy a preset from "
                             f"harness/run/presets/ ({', '.join(preset_names())})")
        text, source = path.read_text(), str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source} is not valid TOML: {exc}") from None
    data.setdefault("name", path_or_preset if is_preset else Path(path_or_preset).stem)
    return data


def build_config(data: dict) -> SweepConfig:
    """Validate a raw mapping (TOML + overrides) into a frozen config, resolving 'auto' and 'all'."""
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InputError(f"unknown sweep key {unknown[0]!r}; valid keys: {', '.join(FIELDS)}")
    values = dict(data)
    for key in LIST_KEYS:
        if key in values and not isinstance(values[key], (list, tuple)):
            values[key] = [values[key]]
    device = values.get("device", "cpu")
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
        if name not in registry:
            raise InputError(f"unknown variant {name!r}; valid variants: {', '.join(registry)} (or all)")
    values["variants"] = variants
    checks = {"patterns": PATTERN_KINDS, "dtypes": tuple(DTYPES), "passes": PASSES}
    for key, valid in checks.items():
        for item in values.get(key, []):
            if item not in valid:
                raise InputError(f"unknown {key[:-1]} {item!r}; valid {key}: {', '.join(valid)}")
    for key in ("seq_lens", "heads", "batch", "head_dims"):
        for item in values.get(key, []):
            if not isinstance(item, int) or isinstance(item, bool) or item < 1:
                raise InputError(f"{key} must be integers >= 1, got {item!r}")
    values["causal"] = [bool(c) for c in values.get("causal", [False])]
    window = values.get("window", 128)
    if not isinstance(window, int) or window < 1:
        raise InputError(f"window must be an integer >= 1, got {window!r}")
    segment = values.get("segment", "sqrt")
    if segment != "sqrt" and (not isinstance(segment, int) or segment < 1):
        raise InputError(f"segment must be an integer >= 1 or \"sqrt\", got {segment!r}")
    for key in ("budget_s", "timeout_s"):
        if key in values and (not isinstance(values[key], (int, float)) or values[key] <= 0):
            raise InputError(f"{key} must be a positive number of seconds, got {values[key]!r}")
    params = values.get("params", {})
    if isinstance(params, dict):
        for vname, p in params.items():
            if vname not in registry:
                raise InputError(f"params given for unknown variant {vname!r}; valid variants: {', '.join(registry)}")
            registry[vname](**p)  # rejects unknown parameter names
        values["params"] = tuple(sorted((v, tuple(sorted(p.items()))) for v, p in params.items()))
    for key in LIST_KEYS:
        if key in values:
            values[key] = tuple(values[key])
            if not values[key]:
                raise InputError(f"{key} is empty; give at least one value")
    return SweepConfig(**values)


def expand(config: SweepConfig) -> list[Case]:
    """Axes to cases. Variants vary fastest, so the reference for one shape serves every variant."""
    registry = discover()
    cases = []
    for dtype in config.dtypes:
        for pass_ in config.passes:
            for b in config.batch:
                for h in config.heads:
                    for d in config.head_dims:
                        for n in config.seq_lens:
                            for kind in config.patterns:
                                for causal in config.causal:
                                    for name in config.variants:
                                        params = {**registry[name].default_params, **dict(dict(config.params).get(name, ()))}
                                        cases.append(Case(
                                            variant=name, pattern=kind, causal=causal,
                                            window=config.window if kind == "local" else None,
                                            segment=config.segment_for(n) if kind == "hierarchical" else None,
                                            device=config.device, dtype=dtype, batch=b, heads=h, seq_len=n,
                                            head_dim=d, pass_=pass_, params=tuple(params.items())))
    return cases
