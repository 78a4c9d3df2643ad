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
from harness.core.names import STATUSES  # noqa: F401  (re-exported: a case's row statuses)
from harness.core.patterns import INT_PARAMS, PATTERN_PARAMS, Pattern

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


def _is_missing(v) -> bool:
    """None, NaN or pandas.NA (a missing cell of an older run's table)."""
    if v is None:
        return True
    try:
        return bool(v != v)
    except TypeError:  # pandas.NA refuses to be a bool
        return True


@dataclass(frozen=True)
class Case:
    """One cell. ``seq_len`` is the key/value length (``kv_len``); ``q_len`` (default: seq_len) queries
    sit at the end of the keys; ``kv_heads`` (default: heads) key/value heads are shared by groups of
    ``heads / kv_heads`` query heads; ``doc_lens`` are the document pattern's document lengths.
    ``window``, ``segment``, ``sinks``, ``stride``, ``globals`` and ``topk`` are the pattern's
    parameters (``harness.core.patterns.PATTERN_PARAMS``): None unless the pattern takes them."""

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
    kv_heads: int | None = None
    q_len: int | None = None
    doc_lens: tuple[int, ...] | None = None
    threads: int | None = None  # torch's intra-op threads on CPU; None: the process's default (all cores)
    sinks: int | None = None  # sink: the first keys every query attends
    stride: int | None = None  # dilated: every stride-th key of the window
    globals: int | None = None  # bigbird: global positions
    topk: int | None = None  # topk: keys kept per query
    inputs: str = "random"  # the input source's id (harness.sources): random, smollm2:<sha>, file:<sha>
    inputs_layer: int | None = None  # the source's layer (None for random inputs)

    def __post_init__(self) -> None:
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", self.heads)
        if self.q_len is None:
            object.__setattr__(self, "q_len", self.seq_len)
        if self.threads is not None and (not isinstance(self.threads, int) or isinstance(self.threads, bool)
                                         or self.threads < 1):
            raise InputError(f"threads must be an integer >= 1, got {self.threads!r}; hint: threads=1")
        for name in ("batch", "heads", "kv_heads", "seq_len", "q_len", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        if self.heads % self.kv_heads:
            raise InputError(f"heads={self.heads} is not divisible by kv_heads={self.kv_heads}; hint: query heads "
                             "come in equal groups per key/value head, e.g. heads=32 kv_heads=8")
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}; valid dtypes: {', '.join(DTYPES)}")
        if self.device not in DEVICES:
            raise InputError(f"unknown device {self.device!r}; valid devices: {', '.join(DEVICES)}")
        if self.pass_ not in PASSES:
            raise InputError(f"unknown pass {self.pass_!r}; valid passes: {', '.join(PASSES)}")
        used = PATTERN_PARAMS.get(self.pattern, ())  # an unknown pattern is named by pattern_obj below
        for name in INT_PARAMS:
            if name not in used:
                object.__setattr__(self, name, None)
        if self.pattern != "document":
            object.__setattr__(self, "doc_lens", None)
        elif self.doc_lens is not None:
            object.__setattr__(self, "doc_lens", tuple(self.doc_lens))
        self.pattern_obj.check_lengths(self.q_len, self.seq_len)  # validates the pattern's parameters too
        object.__setattr__(self, "params", tuple(sorted(dict(self.params).items())))
        if not isinstance(self.inputs, str) or not self.inputs:
            raise InputError(f"inputs must be a source id such as 'random', got {self.inputs!r}")
        if self.inputs == "random":
            object.__setattr__(self, "inputs_layer", None)

    @property
    def pattern_obj(self) -> Pattern:
        return Pattern(self.pattern, self.causal, self.window, self.segment, self.doc_lens, self.sinks, self.stride,
                       self.globals, self.topk)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def kv_len(self) -> int:
        return self.seq_len

    @property
    def group(self) -> int:
        """Query heads per key/value head (1: multi-head; heads: multi-query)."""
        return self.heads // self.kv_heads

    @property
    def square(self) -> bool:
        return self.q_len == self.seq_len and self.kv_heads == self.heads

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """q's shape (B, heads, q_len, D)."""
        return (self.batch, self.heads, self.q_len, self.head_dim)

    @property
    def kv_shape(self) -> tuple[int, int, int, int]:
        """k's and v's shape (B, kv_heads, kv_len, D)."""
        return (self.batch, self.kv_heads, self.seq_len, self.head_dim)

    @property
    def id(self) -> str:
        """Stable, human-readable identity; equal cases have equal ids across processes and runs.

        Square multi-head cases keep the ids of schema versions 1 and 2."""
        params = ",".join(f"{k}={v}" for k, v in self.params)
        kv = f"kv{self.kv_heads}" if self.kv_heads != self.heads else ""
        q = f"q{self.q_len}" if self.q_len != self.seq_len else ""
        return (f"{self.variant}/{self.pattern_obj.label}/{self.device}/{self.dtype}/"
                f"b{self.batch}h{self.heads}{kv}n{self.seq_len}{q}d{self.head_dim}/{self.pass_}"
                + (f"/t{self.threads}" if self.threads is not None else "") + (f"/{params}" if params else "")
                + (f"/in={self.inputs}@L{self.inputs_layer}" if self.inputs != "random" else ""))

    @property
    def pairs(self) -> int:
        return self.pattern_obj.pairs(self.q_len, self.seq_len)

    @property
    def flops(self) -> float:
        fwd = 4.0 * self.batch * self.heads * self.head_dim * self.pairs
        return fwd * (1.0 + BACKWARD_FLOP_FACTOR) if self.pass_ == "fwd_bwd" else fwd

    @property
    def bytes(self) -> int:
        """Minimum memory traffic of the call: read q, k, v and write o; for fwd_bwd also read o and
        dO and write dq, dk, dv."""
        size = torch.empty((), dtype=self.torch_dtype).element_size()
        q_elems = self.batch * self.heads * self.q_len * self.head_dim
        kv_elems = self.batch * self.kv_heads * self.seq_len * self.head_dim
        fwd = 2 * q_elems + 2 * kv_elems  # q, o; k, v
        total = fwd + (3 * q_elems + 2 * kv_elems if self.pass_ == "fwd_bwd" else 0)  # o, dO, dq; dk, dv
        return total * size

    def replace(self, **changes) -> "Case":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if "heads" in changes and "kv_heads" not in changes and self.kv_heads == self.heads:
            values["kv_heads"] = None  # a multi-head case stays multi-head
        if "seq_len" in changes and "q_len" not in changes and self.q_len == self.seq_len:
            values["q_len"] = None  # a square case stays square
        values.update(changes)
        return Case(**values)

    def to_record(self) -> dict:
        """Flat dict: every field its own column (``pass_`` becomes ``pass``; params and doc_lens JSON
        text), plus ``kv_len`` (= seq_len)."""
        rec = asdict(self)
        rec["pass"] = rec.pop("pass_")
        rec["params"] = json.dumps(dict(self.params), sort_keys=True)
        rec["doc_lens"] = json.dumps(list(self.doc_lens)) if self.doc_lens is not None else None
        rec["kv_len"] = self.seq_len
        return rec

    @classmethod
    def from_record(cls, rec: dict) -> "Case":
        """The case of a row, from any schema version (rows before version 3 have no kv_heads, q_len, doc_lens;
        older rows may lack sinks, stride, globals, topk: None)."""
        values = {f.name: rec.get(f.name if f.name != "pass_" else "pass") for f in fields(cls)}
        values["params"] = tuple(json.loads(values["params"] or "{}").items())
        values["inputs"] = "random" if _is_missing(values["inputs"]) or values["inputs"] == "" else values["inputs"]
        for name in (*INT_PARAMS, "kv_heads", "q_len", "threads", "inputs_layer"):
            v = values[name]
            values[name] = None if _is_missing(v) else int(v)  # NaN / NA from pandas -> None
        for name in ("batch", "heads", "seq_len", "head_dim"):
            values[name] = int(values[name])
        lens = values["doc_lens"]
        values["doc_lens"] = None if _is_missing(lens) or lens == "" else tuple(json.loads(lens))
        values["causal"] = bool(values["causal"])
        return cls(**values)

    @classmethod
    def from_tensors(cls, variant: str, q: torch.Tensor, pattern: Pattern, pass_: str = "fwd",
                     params: dict | None = None, k: torch.Tensor | None = None) -> "Case":
        b, h, q_len, d = q.shape
        kv_heads, kv_len = (k.shape[1], k.shape[2]) if k is not None else (h, q_len)
        return cls(variant=variant, pattern=pattern.kind, causal=pattern.causal, window=pattern.window,
                   segment=pattern.segment, device=q.device.type, dtype=dtype_name(q.dtype), batch=b,
                   heads=h, seq_len=kv_len, head_dim=d, pass_=pass_, params=tuple((params or {}).items()),
                   kv_heads=kv_heads, q_len=q_len, doc_lens=pattern.doc_lens, sinks=pattern.sinks,
                   stride=pattern.stride, globals=pattern.globals, topk=pattern.topk)


