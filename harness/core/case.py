"""A case is one frozen, hashable cell of a sweep: which variant runs which pattern on which shape.

FLOP convention (documented in the README): a forward pass costs 4 * B * H * D * P floating point
operations, where P is the number of allowed (query, key) pairs of the pattern, summaries included
(2 * D for the score dot product, 2 * D for the weighted sum of values; softmax and masking are not
counted). The backward pass is counted as 2.5x the forward, so ``fwd_bwd`` = 3.5x ``fwd``. This is
the convention of FlashAttention's benchmarks, applied to the pairs a pattern actually allows.
``STATUSES`` are the statuses a row can have.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import torch

from harness.core.errors import InputError
from harness.core.patterns import Pattern

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


DEVICES = ("cpu", "cuda")


PASSES = ("fwd", "fwd_bwd")


BACKWARD_FLOP_FACTOR = 2.5


def dtype_name(dtype: torch.dtype) -> str:
    for name, dt in DTYPES.items():
        if dt == dtype:
            return name
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Case:
    variant: str
    pattern: str = "global"
    causal: bool = False
    window: int | None = None
    segment: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    batch: int = 1
    heads: int = 8
    seq_len: int = 1024
    head_dim: int = 64
    pass_: str = "fwd"
    params: tuple[tuple[str, object], ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("batch", "heads", "seq_len", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}; valid dtypes: {', '.join(DTYPES)}")
        if self.device not in DEVICES:
            raise InputError(f"unknown device {self.device!r}; valid devices: {', '.join(DEVICES)}")
        if self.pass_ not in PASSES:
            raise InputError(f"unknown pass {self.pass_!r}; valid passes: {', '.join(PASSES)}")
        self.pattern_obj  # validates window / segment
        object.__setattr__(self, "params", tuple(sorted(dict(self.params).items())))
        if self.pattern != "local":
            object.__setattr__(self, "window", None)
        if self.pattern != "hierarchical":
            object.__setattr__(self, "segment", None)

    @property
    def pattern_obj(self) -> Pattern:
        return Pattern(self.pattern, self.causal, self.window, self.segment)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.heads, self.seq_len, self.head_dim)

    @property
    def id(self) -> str:
        """Stable, human-readable identity; equal cases have equal ids across processes and runs."""
        params = ",".join(f"{k}={v}" for k, v in self.params)
        return (f"{self.variant}/{self.pattern_obj.label}/{self.device}/{self.dtype}/"
                f"b{self.batch}h{self.heads}n{self.seq_len}d{self.head_dim}/{self.pass_}"
                + (f"/{params}" if params else ""))

    @property
    def pairs(self) -> int:
        return self.pattern_obj.pairs(self.seq_len)

    @property
    def flops(self) -> float:
        fwd = 4.0 * self.batch * self.heads * self.head_dim * self.pairs
        return fwd * (1.0 + BACKWARD_FLOP_FACTOR) if self.pass_ == "fwd_bwd" else fwd

    def replace(self, **changes) -> "Case":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Case(**values)

    def to_record(self) -> dict:
        """Flat dict: every field its own column (``pass_`` becomes ``pass``, params are JSON text)."""
        rec = asdict(self)
        rec["pass"] = rec.pop("pass_")
        rec["params"] = json.dumps(dict(self.params), sort_keys=True)
        return rec

    @classmethod
    def from_record(cls, rec: dict) -> "Case":
        values = {f.name: rec[f.name if f.name != "pass_" else "pass"] for f in fields(cls)}
        values["params"] = tuple(json.loads(values["params"] or "{}").items())
        for name in ("window", "segment"):
            v = values[name]
            values[name] = None if v is None or v != v else int(v)  # NaN from pandas -> None
        for name in ("batch", "heads", "seq_len", "head_dim"):
            values[name] = int(values[name])
        values["causal"] = bool(values["causal"])
        return cls(**values)

    @classmethod
    def from_tensors(cls, variant: str, q: torch.Tensor, pattern: Pattern, pass_: str = "fwd",
                     params: dict | None = None) -> "Case":
        b, h, n, d = q.shape
        return cls(variant=variant, pattern=pattern.kind, causal=pattern.causal, window=pattern.window,
                   segment=pattern.segment, device=q.device.type, dtype=dtype_name(q.dtype), batch=b,
                   heads=h, seq_len=n, head_dim=d, pass_=pass_, params=tuple((params or {}).items()))


STATUSES = ("ok", "unsupported", "oom", "timeout", "error")
