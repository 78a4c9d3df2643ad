"""attnbench: benchmark and compare self-attention implementations.

The public API (see the README and docs/architecture.md)::

    from harness import Pattern, Case, get_variant, list_variants, reference, run_sweep, load_run, compare_runs

Importing this package has no side effects: no logging set-up, no torch flags, no hardware probing.
The names above are imported on first use (PEP 562), so ``import harness`` and ``attnbench --help``
stay fast; variants are discovered only when ``get_variant`` or ``list_variants`` is called.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_PUBLIC = {
    "Pattern": "harness.core.patterns",
    "Case": "harness.core.case",
    "InputError": "harness.core.errors",
    "Variant": "harness.core.registry",
    "register": "harness.core.registry",
    "get_variant": "harness.core.registry",
    "list_variants": "harness.core.registry",
    "reference": "harness.core.reference",
    "prepare": "harness.bench.prepare",
    "measure": "harness.bench.measure",
    "build_config": "harness.run.validate",
    "run_sweep": "harness.run.sweep",
    "load_run": "harness.store.load",
    "compare_runs": "harness.analysis.compare",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
