"""What `attnbench list` and `--help` show: backward support per device, every preset and dtype."""

from __future__ import annotations

import json
import re

from harness.run.presets import preset_names


def test_list_shows_backward_per_device(cli, registry):
    rc, out, _ = cli("list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    flex_cpu = rows["flex"]["devices"]["cpu"]
    if flex_cpu["available"]:
        assert flex_cpu["backward"] is False and "backward on CPU" in flex_cpu["backward_reasons"][0]
    assert rows["naive"]["devices"]["cpu"]["backward"] is True
    rc, out, _ = cli("list")
    flex_text = out.split("flex:")[1].split("\n")[2]
    assert flex_text.startswith("  cpu:") and ("backward: no" in flex_text or "unavailable" in flex_text)


def test_help_lists_every_preset_and_every_dtype(cli):
    for command in ("sweep", "run"):
        rc, out, _ = cli(command, "--help")
        text = " ".join(re.sub(r"-\n\s*", "-", out).split())  # argparse wraps long names at hyphens
        assert rc == 0 and all(p in text for p in preset_names())
        assert all(dt in text for dt in ("float32", "float16", "bfloat16", "float64"))


def test_the_command_line_starts_without_torch_or_plotting():
    """``attnbench --help`` and every usage error build the parser only: no torch, matplotlib or jinja2
    (they cost seconds at start-up; each command imports them when it runs)."""
    import subprocess
    import sys

    code = ("import sys, harness.cli.main; harness.cli.main.build_parser(); "
            "print(sorted(m for m in ('torch', 'matplotlib', 'jinja2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
