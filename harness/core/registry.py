"""Variant registry: capabilities, reasons, registration and discovery.

Modelled on xformers' fmha operators: a variant declares what it supports as class constants and
``not_supported_reasons(case)`` returns readable reasons (an empty list means it runs). Subclasses
extend their parent's list. A missing optional dependency is a reason, never an import error.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import pkgutil
from importlib.metadata import entry_points
from typing import Any, ClassVar, TypeVar

import torch

from harness.core.case import DTYPES, Case
from harness.core.errors import InputError, UnsupportedCaseError, one_line
from harness.core.patterns import Pattern
from harness.core.reference import check_qkv

ENTRY_POINT_GROUP = "attnbench.variants"


class Variant:
    """Base class of every attention variant. Subclasses set the class constants and ``forward``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    patterns: ClassVar[tuple[str, ...]] = ()
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    dtypes: ClassVar[tuple[str, ...]] = ("float32", "float16", "bfloat16")
    backward: ClassVar[bool] = True
    gqa: ClassVar[bool] = False  # kv_heads < heads (grouped-query and multi-query heads)
    decode: ClassVar[bool] = False  # q_len < kv_len (queries at the end of the keys)
    max_head_dim: ClassVar[int] = 256
    default_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.default_params))
        if unknown:
            valid = ", ".join(self.default_params) or "none"
            raise InputError(f"variant {self.name!r} has no parameter {unknown[0]!r}; valid parameters: {valid}")
        for key, value in params.items():
            self.check_param(key, value)
        self.params = {**self.default_params, **params}

    @classmethod
    def check_param(cls, key: str, value: Any) -> None:
        """Raise InputError unless ``value`` has the type of ``default_params[key]`` (ints: >= 1)."""
        default = cls.default_params[key]
        if isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, expected = isinstance(value, int) and not isinstance(value, bool) and value >= 1, "an integer >= 1"
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            expected = "a finite number"
        elif isinstance(default, str):
            ok, expected = isinstance(value, str), "a string"
        else:
            ok, expected = default is None or isinstance(value, type(default)), f"a {type(default).__name__}"
        if not ok:
            raise InputError(f"variant {cls.name!r}: parameter {key} must be {expected}, got {value!r} "
                             f"({type(value).__name__}); hint: {key} = {default!r} (its default)")

    # ---- capabilities -----------------------------------------------------------------------
    def not_supported_reasons(self, case: Case) -> list[str]:
        reasons = []
        if case.pattern not in self.patterns:
            reasons.append(f"pattern={case.pattern} (supported: {', '.join(self.patterns)})")
        if case.device not in self.devices:
            reasons.append(f"device={case.device} (supported: {', '.join(self.devices)})")
        elif case.device == "cuda" and not torch.cuda.is_available():
            reasons.append("device=cuda: no CUDA device is available to torch "
                           f"(torch {torch.__version__}, torch.cuda.is_available() is False)")
        if case.dtype not in self.dtypes:
            reasons.append(f"dtype={case.dtype} (supported: {', '.join(self.dtypes)})")
        if case.pass_ == "fwd_bwd" and not self.backward:
            reasons.append("pass=fwd_bwd: this variant has no backward")
        if case.kv_heads != case.heads and not self.gqa:
            reasons.append(f"kv_heads={case.kv_heads} < heads={case.heads}: this variant has no grouped-query heads")
        if case.q_len != case.seq_len and not self.decode:
            reasons.append(f"q_len={case.q_len} < kv_len={case.seq_len}: this variant computes square cases only")
        if case.head_dim > self.max_head_dim:
            reasons.append(f"head_dim={case.head_dim} (supported: <= {self.max_head_dim})")
        return reasons

    def supports(self, case: Case) -> bool:
        return not self.not_supported_reasons(case)

    def device_reasons(self, device: str, pass_: str = "fwd") -> list[str]:
        """Reasons that hold for every case on ``device`` and ``pass_`` (used by ``attnbench list``)."""
        probe = Case(variant=self.name, pattern=self.patterns[0] if self.patterns else "global",
                     window=16, segment=16, device=device, dtype=self.dtypes[0] if self.dtypes else "float32",
                     batch=1, heads=1, seq_len=128, head_dim=64, pass_=pass_, params=tuple(self.params.items()))
        return self.not_supported_reasons(probe)

    def backward_reasons(self, device: str) -> list[str]:
        """Why ``fwd_bwd`` cannot run on ``device`` beyond why ``fwd`` cannot (empty: it has a backward there)."""
        fwd = set(self.device_reasons(device))
        return [r for r in self.device_reasons(device, "fwd_bwd") if r not in fwd]

    # ---- computation ------------------------------------------------------------------------
    # The engine (harness.bench.prepare) calls these once per case, outside every timed region:
    # ``reasons`` -> ``constants(case)`` (timed as mask_s) -> a warm call when ``compiles`` (timed
    # in setup_s) -> the timed callable, which calls ``forward(q, k, v, pattern=..., **constants)``
    # inside ``timing_context(case)``, entered once around all timed calls.
    compiles: ClassVar[bool] = False  # True: the first call compiles; the engine makes it in setup

    def constants(self, case: Case) -> dict[str, Any]:
        """Per-shape constants ``forward`` takes as keyword arguments (masks, block masks, biases)."""
        return {}

    def timing_context(self, case: Case) -> contextlib.AbstractContextManager:
        """Entered once around the warm-up and every timed call (backend pins, compiler settings)."""
        return contextlib.nullcontext()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
                **constants: Any) -> torch.Tensor:
        """The kernel: (B, H, N, D) tensors in, (B, H, N, D) out; no validation, timing or printing."""
        raise NotImplementedError

    def case_for(self, q: torch.Tensor, pattern: Pattern, pass_: str = "fwd", k: torch.Tensor | None = None) -> Case:
        return Case.from_tensors(self.name, q, pattern, pass_, self.params, k)

    def check_supported(self, case: Case) -> None:
        """Raise UnsupportedCaseError carrying the reasons when this variant cannot run ``case``."""
        reasons = self.not_supported_reasons(case)
        if reasons:
            raise UnsupportedCaseError(
                f"variant {self.name!r} cannot run {case.pattern_obj.label} on {case.device}/{case.dtype}: "
                + "; ".join(reasons) + ". Hint: run `attnbench list` to see what each variant supports")

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
                 pass_: str = "fwd") -> torch.Tensor:
        """Validated entry point for users: checks inputs and support, builds constants, runs ``forward``.

        Benchmarks never time this: the engine prepares a case once and times ``forward`` alone.
        """
        check_qkv(q, k, v)
        case = self.case_for(q, pattern, pass_, k)
        self.check_supported(case)
        with self.timing_context(case):
            return self.forward(q, k, v, pattern=pattern, **self.constants(case))


V = TypeVar("V", bound=type[Variant])


REGISTRY: dict[str, type[Variant]] = {}


LOAD_ERRORS: dict[str, str] = {}


def register(cls: V) -> V:
    """Class decorator: add a Variant subclass to the registry under ``cls.name``; returns the class."""
    if not (isinstance(cls, type) and issubclass(cls, Variant)):
        raise TypeError(f"@register expects a Variant subclass, got {cls!r}")
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name; set the class attribute `name`")
    existing = REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"variant name {cls.name!r} is already registered by "
                         f"{existing.__module__}.{existing.__qualname__}; pick another name for "
                         f"{cls.__module__}.{cls.__qualname__}")
    for dt in cls.dtypes:
        if dt not in DTYPES:
            raise ValueError(f"{cls.__qualname__}.dtypes has unknown dtype {dt!r}; valid: {', '.join(DTYPES)}")
    REGISTRY[cls.name] = cls
    return cls


_discovered = False


def discover() -> dict[str, type[Variant]]:
    """Import every module of the ``variants`` package and every ``attnbench.variants`` entry point.

    A plug-in that fails to load is recorded in ``LOAD_ERRORS`` (shown by ``attnbench list``), not raised.
    """
    global _discovered
    if not _discovered:
        import variants  # here, not at the top: variants import this module (a real cycle)

        for info in sorted(pkgutil.iter_modules(variants.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"variants.{info.name}")
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as exc:  # a broken plug-in must not take the harness down
                LOAD_ERRORS[ep.name] = one_line(exc)
        _discovered = True
    return dict(sorted(REGISTRY.items()))


def get_variant(name: str, **params: Any) -> Variant:
    registry = discover()
    if name not in registry:
        raise unknown_variant(name, registry)
    return registry[name](**params)


def unknown_variant(name: str, registry: dict) -> InputError:
    """The error for a name that is not registered: its load error if it is a broken plug-in."""
    if name in LOAD_ERRORS:
        return InputError(f"variant {name!r} failed to load: {LOAD_ERRORS[name]}; hint: fix or uninstall that "
                          "plug-in (`attnbench list` shows every load error)")
    return InputError(f"unknown variant {name!r}; valid variants: {', '.join(registry)}")


def variant_names() -> list[str]:
    return list(discover())


def list_variants() -> dict[str, type[Variant]]:
    """Every registered variant class by name (built-in and plug-in), sorted."""
    return discover()
