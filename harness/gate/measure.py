"""The regression gate's measuring side: git refs and commit markers, and pairs of worker processes
(one per tree).

Both trees are measured by workers of *this* harness (``harness/run/worker.py``, run by path with
the tree under test first on PYTHONPATH), so the timing loop is the same for both sides; each worker
names the files it imported and is refused when they lie outside its tree.
"""

from __future__ import annotations

import time
from pathlib import Path

from harness.core.errors import InputError
from harness.gate.verdict import Measurements, block_order, parse_accept_markers
from harness.run.protocol import WorkerDied, WorkerProcess
from harness.store.git import git


def repo_root(tree: Path) -> Path:
    if not tree.is_dir():
        raise InputError(f"--tree {tree} is not a folder; hint: run attnbench ci inside a git checkout")
    root = git(tree, "rev-parse", "--show-toplevel", check=False)
    if not root:
        raise InputError(f"{tree} is not inside a git checkout; hint: attnbench ci compares against a git ref, "
                         "run it in a clone of the repository")
    return Path(root)


def resolve_ref(root: Path, ref: str) -> str:
    sha = git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if not sha:
        raise InputError(f"BASE_REF {ref!r} is not a commit in {root}; hint: a branch, tag or sha such as "
                         "origin/main or HEAD~1 (in a shallow CI clone, fetch it first: git fetch --depth=2)")
    return sha


def accept_markers(root: Path, base_sha: str) -> list[str]:
    """Markers in the commit messages of BASE..HEAD of the tested tree (HEAD's message if that is empty)."""
    messages = git(root, "log", "--format=%B", f"{base_sha}..HEAD", check=False)
    if not messages.strip():
        messages = git(root, "log", "-1", "--format=%B", "HEAD", check=False)
    return parse_accept_markers(messages)


# ---- measuring --------------------------------------------------------------------------------
class WorkerError(Exception):
    pass


def start_worker(tree: Path, cases: list[dict], budget_s: float, threads: int, clock: str,
                 extras: bool = True) -> WorkerProcess:
    """A gate worker on ``tree``; refuses one that imported harness or variants from elsewhere. With
    ``extras`` it also measures each case's peak memory and error (deterministic: one pair suffices)."""
    job = {"mode": "gate", "cases": cases, "budget_s": budget_s, "calibration_budget_s": max(0.01, budget_s / 4),
           "threads": threads, "clock": clock, "extras": extras}
    env = {var: str(threads) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    try:
        worker = WorkerProcess(tree, job, env)
    except WorkerDied as died:
        raise WorkerError(f"a worker in {tree}: {died.reason}") from None
    info = worker.info
    files = [info["harness_file"], info["variants_file"], *info["variant_files"].values()]
    stray = [f for f in files if not Path(f).resolve().is_relative_to(tree.resolve())]
    if stray:
        worker.close()
        raise WorkerError(f"a worker meant to run {tree} imported {stray[0]} instead; hint: check "
                          "PYTHONPATH and that the tree has harness/ and variants/")
    return worker


def measure_pairs(trees: dict[str, Path], cases: list[dict], n_pairs: int, m: Measurements, budget_s: float,
                  threads: int, clock: str, timeout_s: float, log) -> None:
    """``n_pairs`` pairs of fresh processes (one per side). Within a pair every case is measured in
    blocks ordered A B B A (or B A A B), one process waiting while the other measures."""
    for j in range(n_pairs):
        t0 = time.perf_counter()
        workers = {}
        try:
            for side in trees:
                workers[side] = worker = start_worker(trees[side], cases, budget_s, threads, clock, extras=j == 0)
                info = worker.info
                if m.pairs == 0:
                    log(f"  {side}: the worker imported harness from {Path(info['harness_file']).parent} and "
                        f"variants from {Path(info['variants_file']).parent}")
            order = block_order(m.pairs)
            blocks = {side: {rec["case_id"]: [] for rec in cases} for side in trees}
            for i, rec in enumerate(cases):
                for side in order:
                    got = blocks[side][rec["case_id"]]
                    try:
                        got.append(workers[side].ask({"case": i, "calibrate": not got}, timeout_s))
                    except WorkerDied as died:
                        raise WorkerError(f"a worker in {trees[side]}: {died.reason}") from None
        finally:
            for worker in workers.values():
                worker.close()
        m.add_pair(blocks)
        log(f"  process pair {j + 1}/{n_pairs} ({''.join(s[0].upper() for s in order)}): {len(cases)} cases in "
            f"{time.perf_counter() - t0:.1f} s")
