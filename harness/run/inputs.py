"""A sweep's ``inputs`` axis resolved against its sources (harness.sources).

``random`` inputs take the grid's shape axes. Real inputs (``smollm2``, a q/k/v file) bring their own
shape: their heads, key/value heads and head_dim become the grid's, and random inputs in the same
sweep take that shape too, so the two are compared side by side on one shape. A shape axis given
explicitly that contradicts them, a key length above what a source holds, or ``layers`` without real
inputs is a one-line error before anything runs. Each source is loaded once per process
(``harness.bench.inputs.use_source``), holding the grid's longest key length and its layers; cases
record the source's id and layer (``Case.inputs``, ``Case.inputs_layer``).
"""

from __future__ import annotations

import dataclasses

from harness.bench.inputs import use_source
from harness.core.errors import InputError

SHAPE_KEYS = {"heads": "heads", "kv_heads": "kv_heads", "head_dims": "head_dim"}  # grid axis -> source field


def _max_len(grid) -> int:
    return max(grid.kv_lens or grid.seq_lens)


def _load(grid, spec: str):
    return use_source(spec, tuple(grid.layers), _max_len(grid))


def real_sources(grid) -> list:
    """The grid's real input sources, loaded (once per process)."""
    return [_load(grid, spec) for spec in grid.inputs if spec != "random"]


def resolve_inputs(grid, given: set[str]):
    """``grid`` with the shape of its real inputs (see the module); ``given``: the keys the user set."""
    sources = real_sources(grid)
    if not sources:
        if grid.layers:
            raise InputError(f"layers {list(grid.layers)} apply to real inputs only, and this sweep's inputs are "
                             "random; hint: --inputs smollm2 (or a q/k/v file), or drop --layers")
        return grid
    first = sources[0]
    shape = {key: (getattr(first, field),) for key, field in SHAPE_KEYS.items()}
    for other in sources[1:]:
        theirs = {key: (getattr(other, field),) for key, field in SHAPE_KEYS.items()}
        if theirs != shape:
            raise InputError(f"inputs {first.id} and {other.id} differ in shape ({_shape_text(shape)} against "
                             f"{_shape_text(theirs)}); hint: one sweep per shape of inputs")
    for key, want in shape.items():
        have = tuple(getattr(grid, key))
        if key in given and have and have != want:
            raise InputError(f"{key} = {list(have)} contradicts inputs {first.id}, which have {key} = {list(want)}; "
                             f"hint: drop {key} (real inputs bring their own shape: {_shape_text(shape)})")
    return dataclasses.replace(grid, **shape)


def _shape_text(shape: dict) -> str:
    return ", ".join(f"{SHAPE_KEYS[k]} {v[0]}" for k, v in shape.items())


def input_layers(grid) -> list[tuple[str, int | None]]:
    """(source id, layer) of every input source of the grid: one per captured layer of a real source."""
    out = []
    for spec in grid.inputs:
        if spec == "random":
            out.append(("random", None))
        else:
            source = _load(grid, spec)
            out += [(source.id, layer) for layer in source.layers]
    return out


def inputs_meta(grid) -> list[dict]:
    """run.json's ``inputs``: the provenance of each real source (model and text hashes, perplexity, ...)."""
    return [source.meta() for source in real_sources(grid)]
