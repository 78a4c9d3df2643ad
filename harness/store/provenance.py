"""Run folders: journal (crash-safe), tidy Parquet/CSV, run.json with provenance, and the loader.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from harness import __version__
from harness.store.git import HARNESS_ROOT, git


def new_run_id(label: str = "") -> str:
    """Sortable by time: 20261127T210501Z-quick-<pid>."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{label}-{os.getpid()}" if label else f"{stamp}-{os.getpid()}"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: str) -> dict:
    """Where and with what a run was made. Probes hardware, so call it at run time, never at import."""
    commit = git(HARNESS_ROOT, "rev-parse", "HEAD", check=False, timeout_s=10)
    status = git(HARNESS_ROOT, "status", "--porcelain", "--untracked-files=no", check=False, timeout_s=10)
    return {
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "attnbench_version": __version__,
        "torch_version": torch.__version__,
        "xformers_version": _version("xformers"),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" and torch.cuda.is_available() else cpu_model(),
        "cuda_version": torch.version.cuda,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
    }


ENVIRONMENT_KEYS = ("torch_version", "xformers_version", "python_version", "device", "device_name", "cpu_model",
                    "torch_num_threads")


def environment_fingerprint(prov: dict) -> dict:
    """The parts of provenance that must match for a resumed run to be comparable."""
    return {k: prov.get(k) for k in ENVIRONMENT_KEYS}
