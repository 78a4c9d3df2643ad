"""asv suite: a thin adapter generated from the variant registry and a sweep grid (see docs/asv.md).

The grid is a preset TOML: ``harness/run/presets/asv.toml`` by default (small, CPU), or the one named by
the environment variable ``ATTNBENCH_ASV_GRID``: ``small`` (asv.toml), ``large`` (default.toml, the
main job: CUDA float16 when torch sees a GPU), any other preset name, or a path to a TOML file.
The grid file is read from the checkout that holds this suite, so two commits compared with asv run
the same grid; the harness and variants come from the code under test.

Benchmarks, one class per pass (``Fwd``, ``FwdBwd``), over ``params`` = variant x pattern x
seq_len x heads (plus batch, head_dim or dtype when the grid has several values on that axis):

* ``time_attention``: asv's timer around the harness's zero-argument callable, synchronized.
* ``track_peak_mem_bytes``: ``harness.bench.memory.peak_memory`` of one call plus the prepared constants, in bytes (asv's ``peakmem_``
  would be host RSS, which says nothing about the CUDA allocator and little about torch's).
* ``track_flops_per_s``: achieved FLOP/s, ``Case.flops`` over the median of
  ``harness.bench.timing.time_callable`` (the harness's own timer, ``budget_s`` of the grid).

Cells come from ``harness.run.config.expand``; a cell the variant cannot run raises NotImplementedError
carrying the variant's reasons, so asv records it as skipped. Importing this module reads the grid
and the registry (imports torch) and nothing else: no inputs, no compilation, no CUDA probing (asv
forks every benchmark process from one that imported this module). Reasons and cases are computed
once per run in ``setup_cache``; inputs are built in ``setup``.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.bench import (  # as modules: asv would collect a top-level time_callable
    memory,
    timing,
)
from harness.bench.heap import pin_allocator
from harness.bench.prepare import prepare
from harness.core.case import Case
from harness.core.errors import InputError
from harness.core.registry import get_variant
from harness.run.config import Execution, Grid, expand
from harness.run.presets import preset_names
from harness.run.validate import build_config, load_toml

GRID_ENV = "ATTNBENCH_ASV_GRID"
GRID_ALIASES = {"small": "asv", "large": "default"}
PRESETS_DIR = Path(__file__).resolve().parent.parent / "run" / "presets"


def grid_path(value: str | None = None) -> Path:
    """The TOML file of a grid: an alias (small, large), a preset name, or a path to a TOML file."""
    if value is None:
        value = os.environ.get(GRID_ENV, "") or "small"
    name = GRID_ALIASES.get(value, value)
    preset = PRESETS_DIR / f"{name}.toml"
    if "/" not in name and preset.is_file():
        return preset
    path = Path(value).expanduser()
    if path.suffix == ".toml" and path.is_file():
        return path.resolve()
    raise InputError(f"{GRID_ENV}={value!r} names no grid; valid: {', '.join(GRID_ALIASES)}, a preset "
                     f"({', '.join(preset_names())}) or the path of a sweep TOML file")


def load_grid(value: str | None = None) -> dict:
    """The grid's raw TOML data (``name`` is the file's stem)."""
    return load_toml(str(grid_path(value)), is_preset=False)


def pattern_param(kind: str, causal: bool) -> str:
    return f"{kind}-causal" if causal else kind


def param_axes(data: dict) -> list[tuple[str, list]]:
    """(param name, values) of the grid, in the order asv takes them.

    Validates the grid with ``build_config`` without probing for a GPU: a device of "auto" is
    resolved later, in ``setup_cache``; no axis below depends on the device.
    """
    probe_free = {**data, "device": "cpu"} if data.get("device", Grid.device) == "auto" else data
    config = build_config(probe_free)
    axes: list[tuple[str, list]] = [
        ("variant", list(config.grid.variants)),
        ("pattern", [pattern_param(kind, causal) for kind in config.grid.patterns for causal in config.grid.causal]),
        ("seq_len", list(config.grid.seq_lens)),
        ("heads", list(config.grid.heads)),
    ]
    for name, values in (("batch", config.grid.batch), ("head_dim", config.grid.head_dims), ("dtype", config.grid.dtypes)):
        if len(values) > 1:
            axes.append((name, list(values)))
    return axes


def cell_key(case: Case, param_names: list[str]) -> tuple:
    """The asv parameter values of ``case``, in ``param_names`` order, after its pass."""
    values = {"variant": case.variant, "pattern": pattern_param(case.pattern, case.causal),
              "seq_len": case.seq_len, "heads": case.heads, "batch": case.batch,
              "head_dim": case.head_dim, "dtype": case.dtype}
    return (case.pass_, *(values[name] for name in param_names))


GRID = load_grid()
_AXES = param_axes(GRID)
PARAM_NAMES = [name for name, _ in _AXES]
PARAMS = [values for _, values in _AXES]


class _Attention:
    """Shared by the pass classes below; asv only collects classes whose name has no leading ``_``."""

    pass_ = "fwd"
    params = PARAMS
    param_names = PARAM_NAMES
    timeout = float(GRID.get("timeout_s", Execution.timeout_s))
    # asv timing: one round of 3 to 10 samples of >= 20 ms each (override: asv run -a rounds=2 ...)
    rounds = 1
    repeat = (3, 10, 2.0)
    sample_time = 0.02
    warmup_time = 0.1

    def setup_cache(self) -> dict:
        """Every cell of the grid with its reasons, once per asv run (shared by both classes)."""
        config = build_config(GRID)  # resolves device "auto" here, in a benchmark process
        cells = {}
        for case in expand(config):
            variant = get_variant(case.variant, **dict(case.params))
            cells[cell_key(case, PARAM_NAMES)] = (case, variant.not_supported_reasons(case))
        return {"cells": cells, "passes": config.grid.passes, "budget_s": config.execution.budget_s, "grid": config.grid.name,
                "allocator": config.execution.allocator}

    def setup(self, cache: dict, *params) -> None:
        key = (self.pass_, *params)
        if key not in cache["cells"]:
            raise NotImplementedError(f"pass={self.pass_} is not in grid {cache['grid']!r} (passes: "
                                      f"{', '.join(cache['passes'])}); hint: add it to {grid_path()}")
        case, reasons = cache["cells"][key]
        if reasons:
            raise NotImplementedError(f"{case.id}: " + "; ".join(reasons))
        pin_allocator(cache.get("allocator", "steady"))  # as a sweep measures (harness.bench.heap)
        variant = get_variant(case.variant, **dict(case.params))
        prepared = prepare(variant, case)  # reasons, constants, compilation: outside every measurement
        self.case, self.device, self.budget_s = case, case.device, cache["budget_s"]
        self.prepared, self.fn = prepared, prepared.fn
        self.context = prepared.context()
        self.context.__enter__()  # once, around every timed call of this cell; left in teardown
        for _ in range(2):  # the harness's warm-up (time_callable's default)
            self.fn()
        timing.sync(self.device)

    def teardown(self, cache: dict, *params) -> None:
        context = self.__dict__.pop("context", None)
        if context is not None:
            context.__exit__(None, None, None)
        self.__dict__.pop("fn", None)
        self.__dict__.pop("prepared", None)

    def time_attention(self, cache: dict, *params) -> None:
        self.fn()
        timing.sync(self.device)

    def track_peak_mem_bytes(self, cache: dict, *params) -> int:
        return memory.peak_memory(self.fn, self.device)[0] + self.prepared.mask_mem_bytes

    track_peak_mem_bytes.unit = "bytes"

    def track_flops_per_s(self, cache: dict, *params) -> float:
        measured = timing.time_callable(self.fn, self.device, self.budget_s, warmup=0)
        return self.case.flops / measured.median

    track_flops_per_s.unit = "flop/s"


class Fwd(_Attention):
    """Forward pass (under torch.no_grad)."""

    pass_ = "fwd"


class FwdBwd(_Attention):
    """Forward and backward (torch.autograd.grad of q, k, v against a fixed upstream gradient)."""

    pass_ = "fwd_bwd"
