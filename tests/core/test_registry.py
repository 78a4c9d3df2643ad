import json
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from harness.cli.main import main
from harness.core.case import Case
from harness.core.errors import InputError, UnsupportedCaseError
from harness.core.patterns import Pattern
from harness.core.registry import REGISTRY, Variant, get_variant, register

BUILTIN = {"naive", "local", "hierarchical", "chunked", "sdpa_math", "sdpa_flash", "sdpa_efficient",
           "sdpa_cudnn", "flex", "xformers"}


def test_discovers_every_builtin(registry):
    assert BUILTIN <= set(registry)


def test_register_rejects_duplicate_names_and_returns_class(registry):
    class Dup(Variant):
        name = "naive"

    with pytest.raises(ValueError, match="already registered"):
        register(Dup)

    class Fresh(Variant):
        name = "test_fresh_variant"
        patterns = ("global",)

    try:
        assert register(Fresh) is Fresh
    finally:
        REGISTRY.pop("test_fresh_variant", None)


def test_unsupported_pattern_error_names_variant_value_and_supported():
    q = torch.randn(1, 1, 8, 4)
    with pytest.raises(UnsupportedCaseError, match=r"'local'.*pattern=global.*supported: local"):
        get_variant("local")(q, q, q, Pattern("global"))


def test_unsupported_dtype_and_device_are_reasons():
    v = get_variant("naive")
    reasons = v.not_supported_reasons(Case("naive", dtype="float64"))
    assert any("dtype=float64" in r and "float32" in r for r in reasons)
    if not torch.cuda.is_available():
        assert any("cuda" in r for r in v.not_supported_reasons(Case("naive", device="cuda")))


def test_unknown_variant_parameter_is_named():
    with pytest.raises(InputError, match="chunk_z"):
        get_variant("chunked", chunk_z=3)


def test_xformers_reasons_come_from_xformers_and_import_is_quiet():
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        from harness.core.registry import get_variant
        from harness.core.case import Case
        import json
        print(json.dumps(get_variant('xformers').not_supported_reasons(Case('xformers'))))  # a CPU case
    """)], capture_output=True, text=True, check=True)
    assert out.stderr == ""
    reasons = json.loads(out.stdout)
    # xformers' own words: its import failure, its dispatcher's refusal per operator ("xformers <op>: ..."),
    # or the exception it raised for these inputs; the base class's reasons alone would not do.
    own = [r for r in reasons if r.startswith(("xformers cannot be imported:", "xformers refused these inputs:"))
           or re.match(r"xformers \w+: ", r)]
    assert own, reasons


def test_list_json_schema(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert BUILTIN <= names
    for r in rows:
        assert isinstance(r["description"], str) and r["description"]
        assert isinstance(r["patterns"], list) and isinstance(r["backward"], bool)
        for dev in ("cpu", "cuda"):
            info = r["devices"][dev]
            assert isinstance(info["available"], bool)
            assert info["available"] == (info["reasons"] == [])


def test_check_command_ok_and_bad_input(capsys):
    assert main(["check", "--variants", "naive,local"]) == 0
    assert "0 wrong" in capsys.readouterr().out
    assert main(["check", "--variants", "nope"]) == 2
    assert "unknown variant 'nope'" in capsys.readouterr().err


def test_entry_point_plugin(tmp_path):
    """A user's package adds a variant through the attnbench.variants entry-point group."""
    pkg = tmp_path / "myplug"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from harness.core.registry import Variant, register
        @register
        class Mine(Variant):
            name = "my_plugin_variant"
            description = "from a plug-in"
            patterns = ("global",)
            def forward(self, q, k, v, pattern):
                import torch
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=pattern.causal)
    """))
    dist = tmp_path / "myplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[attnbench.variants]\nmine = myplug\n")
    env = {"PYTHONPATH": str(tmp_path)}
    import os
    out = subprocess.run([sys.executable, "-m", "harness", "check", "--variants", "my_plugin_variant"],
                         capture_output=True, text=True, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    assert "0 wrong" in out.stdout and "correct" in out.stdout


@pytest.mark.parametrize("argv", [["--help"], ["list", "--help"], ["check", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0 and "usage" in capsys.readouterr().out
