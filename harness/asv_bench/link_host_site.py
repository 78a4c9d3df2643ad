"""asv install step for a virtualenv environment (docs/asv.md, "asv continuous without torch").

Run by asv.conf.json's ``install_command`` inside the asv virtualenv, after the attnbench wheel of the
commit under test was installed with ``--no-deps``. It makes the host environment's packages (torch,
numpy, ...) importable there without installing them: a ``.pth`` file appends the host's
site-packages after the virtualenv's own, so the commit's attnbench wins over the host's editable
install. The host is ``$ATTNBENCH_HOST_SITE`` (folders separated by ``os.pathsep``) or else the
site-packages of the activated virtual environment (``$VIRTUAL_ENV``). ``ASV_PYTHONPATH`` can't do
this: asv 0.6.6 hands it to install commands but strips it from benchmark processes.
Nothing happens at import (asv imports every module of this folder).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

PTH_NAME = "_attnbench_host_site.pth"


def host_site_paths() -> list[str]:
    given = [p for p in os.environ.get("ATTNBENCH_HOST_SITE", "").split(os.pathsep) if p]
    if given:
        return given
    venv = os.environ.get("VIRTUAL_ENV", "")
    if venv and Path(venv).resolve() != Path(sys.prefix).resolve():
        return [sysconfig.get_paths(vars={"base": venv, "platbase": venv})["purelib"]]
    return []


def main() -> int:
    paths = host_site_paths()
    missing = [p for p in paths if not Path(p, "torch").is_dir()]
    if not paths or missing:
        print(f"link_host_site: no host site-packages with torch (tried: {', '.join(paths) or 'none'}); "
              "hint: activate the project's .venv before asv, or set ATTNBENCH_HOST_SITE to the folder "
              "that holds torch, e.g. $(python -c 'import site; print(site.getsitepackages()[0])')",
              file=sys.stderr)
        return 1
    target = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    target.write_text("\n".join(paths) + "\n")
    print(f"link_host_site: {target} -> {os.pathsep.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
