"""The sweep presets shipped with attnbench: one TOML file per preset (keys as in harness.run.config)."""

from __future__ import annotations

from importlib import resources


def preset_names() -> list[str]:
    """Every shipped preset, sorted (imports nothing heavy: used by `--help`)."""
    return sorted(p.name.removesuffix(".toml") for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".toml"))
