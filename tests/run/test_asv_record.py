"""harness/asv_bench/record.sh describes a fresh machine to asv once, then only runs (asv is faked)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_record_sh_describes_a_fresh_machine(tmp_path):
    fake = tmp_path / "asv"
    fake.write_text(textwrap.dedent("""\
        #!/usr/bin/env bash
        echo "$*" >> "$ASV_LOG"
        if [ "$1" = machine ]; then
          python3 -c 'import json, os, platform; json.dump({"version": 1, platform.uname().node: {}},
                      open(os.path.expanduser("~/.asv-machine.json"), "w"))'
        fi
    """))
    fake.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "ASV": str(fake), "ASV_LOG": str(tmp_path / "log")}
    for _ in range(2):
        res = subprocess.run(["bash", "harness/asv_bench/record.sh", "HEAD", "-b", "nothing"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
    calls = (tmp_path / "log").read_text().splitlines()
    assert calls[0] == "machine --yes"  # the first time only: then the machine is known
    assert [c.split()[0] for c in calls] == ["machine", "run", "run"]
    assert json.loads((home / ".asv-machine.json").read_text())[platform.uname().node] == {}
