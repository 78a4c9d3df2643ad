"""A sweep's configuration: a frozen ``Grid`` (which cases) and a frozen ``Execution`` (how they run),
held together by ``SweepConfig``, and the grid expanded into cases.

``SweepConfig.to_dict`` is the one serialization: a flat mapping of every key, the same keys as a
sweep TOML and the command line, stored as run.json's ``sweep``. ``harness.run.validate.build_config``
reads it back (TOML, run.json, an isolated worker's job, a Ray task all go through it).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

from harness.core.case import Case
from harness.core.patterns import PATTERN_PARAMS, make_doc_lens
from harness.core.registry import discover
from harness.run.budget import TRUST_BUDGET_FRACTION
from harness.run.inputs import input_layers


@dataclass(frozen=True)
class Grid:
    """Which cases a sweep measures: its axes, expanded by ``expand``; a resume must keep them."""

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
    window: tuple[int, ...] = (128,)  # window radius w of local, sink, dilated and bigbird
    segment: tuple[int | str, ...] = ("sqrt",)  # hierarchical's segment lengths; "sqrt": round(sqrt(N))
    sinks: tuple[int, ...] = (4,)  # sink: the first keys every query attends
    stride: tuple[int, ...] = (2,)  # dilated: every stride-th key of the window
    globals: tuple[int, ...] = (4,)  # bigbird: global positions
    topk: tuple[int, ...] = (64,)  # topk: keys kept per query
    inputs: tuple[str, ...] = ("random",)  # where q, k, v come from: random, smollm2, a file (harness.run.inputs)
    layers: tuple[int, ...] = ()  # the layers real inputs come from; empty: the source's default spread
    max_error_elements: int = 2**26  # larger outputs are checked on a smaller twin of the case
    params: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()  # per-variant parameters
    name: str = "custom"  # a label, not a case field: a resume keeps the run's own
    all_cells: bool = False  # rows also for variants that cannot run on the device at all (see ``planned``)


    def same_cases(self, other: Grid) -> list[str]:
        """The keys (``name`` aside) in which ``other`` differs from this grid."""
        mine, theirs = _plain(self), _plain(other)
        return [k for k in mine if k != "name" and mine[k] != theirs[k]]


@dataclass(frozen=True)
class Execution:
    """How a sweep's cases run; a resume may change any of it for the cases still to run."""

    budget_s: float = 0.2  # seconds of timing per case
    timeout_s: float = 300.0  # bound on each attempt at measuring a case
    isolate: bool = False  # each case in a fresh worker process
    retries: int = 1  # attempts per cell after its first: re-measurements of a cell its own evidence flags
    ceiling_retries: int = 2  # end-of-run re-measurements of the matmul ceiling while cells exceed it
    recheck_retries: int = 2  # end-of-run re-checks of a cell still flagged, each one more round
    rounds: int = 1  # times every cell is measured over the run, the fastest kept (harness.analysis.rounds)
    short_rounds: int = 3  # rounds at least for a CPU cell whose calls are short (harness.analysis.rounds)
    recheck_wait_s: float | None = None  # the re-check's waits for quiet, in all; None: recheck_wait_budget_s
    trust_budget: float | None = TRUST_BUDGET_FRACTION  # re-measuring and waiting: this x the first pass; None: unbounded
    allocator: str = "steady"  # the host allocator's state while measuring (harness.bench.heap.ALLOCATORS)
    compile_ahead: bool = True  # compiling variants' CPU cases compiled in parallel first (harness.run.ahead)
    executor: str = "local"  # local or ray (harness.run.ray_executor)
    ray_address: str | None = None  # the Ray cluster; None: a local Ray instance
    ray_cpus_per_case: int | None = None  # CPUs a Ray CPU case holds; None: a whole node's

    PER_INVOCATION = ("executor", "ray_address", "ray_cpus_per_case")  # where it runs now: not kept on resume


GRID_KEYS = tuple(f.name for f in dataclasses.fields(Grid))
EXECUTION_KEYS = tuple(f.name for f in dataclasses.fields(Execution))


@dataclass(frozen=True)
class SweepConfig:
    grid: Grid = Grid()
    execution: Execution = Execution()

    def to_dict(self) -> dict:
        """Every key, flat, JSON-ready (lists, tables): what run.json's ``sweep`` stores."""
        return {**_plain(self.grid), **_plain(self.execution)}

    def with_execution(self, **changes) -> SweepConfig:
        return dataclasses.replace(self, execution=dataclasses.replace(self.execution, **changes))


def _plain(part) -> dict:
    d = dataclasses.asdict(part)
    if "params" in d:
        d["params"] = {v: dict(p) for v, p in part.params}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def lengths(grid: Grid) -> list[tuple[int | None, int]]:
    """(q_len, kv_len) pairs of the sweep; q_len None means square (q_len = kv_len)."""
    kvs = grid.kv_lens or grid.seq_lens
    return [(q, kv) for kv in kvs for q in (grid.q_lens or (None,))]


def segment_length(segment: int | str, n: int) -> int:
    """A ``segment`` axis value at key/value length ``n``: "sqrt" is round(sqrt(n)) (at least 1)."""
    return max(1, round(math.sqrt(n))) if segment == "sqrt" else int(segment)


def pattern_params(grid: Grid, kind: str, n: int) -> list[dict]:
    """The parameter sets of pattern ``kind`` at key/value length ``n``: the product of the axes that
    pattern takes (``harness.core.patterns.PATTERN_PARAMS``), and only those, so no two are equal."""
    axes = []
    for name in PATTERN_PARAMS[kind]:
        values = [segment_length(s, n) for s in grid.segment] if name == "segment" else getattr(grid, name)
        axes.append([(name, v) for v in dict.fromkeys(values)])  # "sqrt" and 32 at N=1024 are one segment
    return [dict(combo) for combo in itertools.product(*axes)]


def expand(config: SweepConfig | Grid) -> list[Case]:
    """Axes to cases. Variants vary fastest, then passes, fwd_bwd first whatever the order given, so
    the references of one shape serve every variant and pass of it (the check's reference with
    gradients holds fwd's output too; its second call's is the same for both passes). Each pattern
    is crossed with the parameter axes it takes only (local x window, sink x window x sinks, ...;
    global with none), so no case appears twice."""
    grid = config.grid if isinstance(config, SweepConfig) else config
    registry = discover()
    cases = []
    passes = sorted(grid.passes, key=lambda p: p != "fwd_bwd")  # stable: fwd_bwd, then the rest as given
    outer = itertools.product(grid.dtypes, grid.threads or (None,), grid.batch, grid.heads, input_layers(grid))
    for dtype, threads, b, h, (source, layer) in outer:
        for kvh, d, (q_len, n), kind in itertools.product(grid.kv_heads or (h,), grid.head_dims, lengths(grid),
                                                          grid.patterns):
            for pp, doc_lens, causal, pass_, name in itertools.product(
                    pattern_params(grid, kind, n), _doc_axis(grid, kind, n), grid.causal, passes, grid.variants):
                params = {**registry[name].default_params, **dict(dict(grid.params).get(name, ()))}
                cases.append(Case(
                    variant=name, pattern=kind, causal=causal, device=grid.device, dtype=dtype, batch=b, heads=h,
                    seq_len=n, head_dim=d, pass_=pass_, params=tuple(params.items()), kv_heads=kvh, q_len=q_len,
                    doc_lens=doc_lens, threads=threads, inputs=source, inputs_layer=layer, **pp))
    return cases


def unavailable(grid: Grid, cases: list[Case]) -> dict[str, list[str]]:
    """The grid's variants that cannot run on its device at all, with the reasons they give once
    (``Variant.device_reasons``): those whose every case of ``cases`` they refuse."""
    registry = discover()
    out = {}
    for name in grid.variants:
        variant = registry[name](**dict(dict(grid.params).get(name, ())))
        reasons = variant.device_reasons(grid.device)
        if reasons and all(variant.not_supported_reasons(c) for c in cases if c.variant == name):
            out[name] = reasons
    return out


def planned(config: SweepConfig) -> tuple[list[Case], dict[str, list[str]]]:
    """The cases a sweep measures into rows, and the variants left out because they cannot run on
    the device at all (``unavailable``). None are left out with ``all_cells`` (each of their cells is a
    row) or on the Ray executor (its nodes, not this process, say what their devices can run)."""
    cases = expand(config)
    judge_here = not config.grid.all_cells and config.execution.executor == "local"
    left_out = unavailable(config.grid, cases) if judge_here else {}
    return [c for c in cases if c.variant not in left_out], left_out


def _doc_axis(grid: Grid, kind: str, kv_len: int) -> list[tuple[int, ...] | None]:
    """Document lengths per ``docs`` value (fixed seed: reproducible), for the document pattern only."""
    if kind != "document":
        return [None]
    return [make_doc_lens(kv_len, k) for k in grid.docs]
