"""pyproject.toml: the license, the build and runtime dependencies, and the warning filters that make
a warning from our own code fail the tests."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_license_dependencies_and_warning_filters():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"  # SPDX string: no setuptools deprecation warning
    assert any(r.startswith("setuptools>=7") and int(r.split(">=")[1].split(".")[0]) >= 77
               for r in meta["build-system"]["requires"])
    assert "psutil" in meta["project"]["dependencies"]
    filters = meta["tool"]["pytest"]["ini_options"]["filterwarnings"]
    assert any(f.startswith("error::Warning:harness") for f in filters)


def test_a_warning_from_our_code_fails_the_tests():
    for module in ("harness", "harness.run.sweep", "variants.flex"):
        with pytest.raises(UserWarning):
            warnings.warn_explicit("a new warning", UserWarning, "x.py", 1, module=module)
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit("not ours", UserWarning, "x.py", 1, module="harnessing")
        warnings.warn_explicit("`torch.jit.script_method` is deprecated. Please switch to `torch.compile` or "
                               "`torch.export`.", DeprecationWarning, "_script.py", 1, module="torch.jit._script")
    assert [str(w.message) for w in seen] == ["not ours"]  # torch's script_method warning is filtered
