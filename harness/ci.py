"""`attnbench ci BASE_REF`: a performance regression gate for CI, built on `attnbench compare`'s statistics.

1. BASE_REF is resolved to a commit and checked out with ``git worktree add --detach`` into a temporary
   folder (removed afterwards). The tree under test is the working tree (``--tree``, default: the git
   checkout of the current directory). The cases are the regression preset
   (``harness/presets/regression.toml``), expanded by *this* harness.
2. Both sides are measured on this machine, in this job, in fresh worker processes that come in
   pairs (one per side, ``--processes`` pairs). Within a pair every case is measured in four blocks,
   A B B A (B A A B in odd pairs), one process waiting while the other measures, so load that comes
   and goes hits both sides alike. Each process times the calibration kernel (float32 512x512 matmul,
   as in ``harness.measure``) just before its first block of every case. Workers run with the same Python interpreter and
   with ``cwd`` and ``PYTHONPATH`` set to their tree, so that tree's ``harness`` and ``variants`` are
   imported; each worker names the files it imported and the gate stops if they are outside its tree.
   The timing loop is ``WORKER_SOURCE`` below, the same for both sides; only the code under test
   differs. The clock is the measuring thread's CPU time (``--clock cpu``), which leaves out time
   spent preempted by other processes; one torch thread per worker.
3. Per process and case: the mean of its two block medians divided by the process's calibration figure
   (the median of its calibrations: the speed of the machine as that process saw it). Per side: the
   median over processes. The ratio new / base, its bootstrap interval (over processes, seed
   fixed per case) and the verdict come from ``harness.compare.median_ratio_ci`` and ``time_verdict``:
   slower only when the whole interval is above ``--threshold``.
4. Flagged cases are measured again in ``--recheck-processes`` more pairs and judged on all pairs
   together: a fluke is outvoted, a real slowdown stays.
5. A slowdown is *accepted* (reported, exit 0) when a commit message in BASE_REF..HEAD of the tested
   tree carries ``[accept-regression: <case-id substring>[, ...]]`` or ``[accept-regression: all]``.
   The threshold is never loosened.

Prints a Markdown verdict (also appended to ``$GITHUB_STEP_SUMMARY`` when that is set). Exit status:
1 on a slowdown no marker accepts, or on a case that ran at BASE_REF and fails on the tested tree; 2 on
bad input (an unknown ref, not a git checkout) or when a side could not be measured; 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.patterns import InputError

DEFAULT_PROCESSES = 5
DEFAULT_RECHECK_PROCESSES = 8
DEFAULT_THREADS = 1
RESULT_MARKER = "@@attnbench-ci@@"
ACCEPT_RE = re.compile(r"\[accept-regression:\s*([^\]]*)\]", re.IGNORECASE)

# The worker: run as `python -c WORKER_SOURCE` with cwd and PYTHONPATH set to the tree under test. It
# imports only torch and that tree's harness.case / harness.registry; the timing loop below is the same
# for both sides. Protocol (JSON lines): the job {cases, threads, clock, budget_s, calibration_budget_s}
# on stdin, answered by a "ready" line naming the files imported; then {"case": i, "calibrate": bool}
# commands, each answered by the case's median per-call time (and, when asked, the calibration
# kernel's, timed just before it); {"quit": true} ends it. Answers start with RESULT_MARKER; anything else on stdout is ignored.
WORKER_SOURCE = r'''
import json, statistics, sys, time

def reply(obj):
    print("@@attnbench-ci@@" + json.dumps(obj), flush=True)

def timed(fn, budget_s, clock, min_samples=5, warmup=2):
    """Per-call times by ``clock``: at least min_samples calls, and calls for about budget_s wall seconds."""
    for _ in range(warmup):
        fn()
    samples, start = [], time.perf_counter()
    while len(samples) < min_samples or time.perf_counter() - start < budget_s:
        t0 = clock()
        fn()
        samples.append(clock() - t0)
        if len(samples) >= 10000:
            break
    return samples

def main():
    job = json.loads(sys.stdin.readline())
    import torch
    torch.set_num_threads(job["threads"])
    # CPU time of the measuring thread (all threads with more than one) leaves out time spent preempted
    clock = {"wall": time.perf_counter, "cpu": time.thread_time if job["threads"] == 1 else time.process_time}[job["clock"]]
    import harness, variants
    from harness.case import Case
    from harness.registry import discover, get_variant
    registry = discover()
    names = sorted({rec["variant"] for rec in job["cases"]} & set(registry))
    reply({"ready": True, "harness_file": harness.__file__, "variants_file": variants.__file__,
           "variant_files": {n: sys.modules[registry[n].__module__].__file__ for n in names}})
    a = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))

    def build(rec):
        if rec["variant"] not in registry:
            return {"status": "absent", "reason": "no variant %r in this tree" % rec["variant"]}
        case = Case.from_record(rec)
        variant = get_variant(rec["variant"], **dict(case.params))
        reasons = variant.not_supported_reasons(case)
        if reasons:
            return {"status": "unsupported", "reason": "; ".join(reasons)}
        variant.prepare(case)
        gen = torch.Generator().manual_seed(0)
        grad_on = case.pass_ == "fwd_bwd"
        q, k, v, g = (torch.randn(case.shape, generator=gen).to(case.device, case.torch_dtype) for _ in range(4))
        q, k, v = (t.requires_grad_(grad_on) for t in (q, k, v))
        pattern = case.pattern_obj
        if grad_on:
            return lambda: torch.autograd.grad(variant(q, k, v, pattern, "fwd_bwd"), (q, k, v), g)
        def fwd():
            with torch.no_grad():
                return variant(q, k, v, pattern)
        return fwd

    fns, warm = {}, set()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        i = cmd["case"]
        try:
            if i not in fns:
                fns[i] = build(job["cases"][i])
            fn = fns[i]
            if isinstance(fn, dict):
                reply(fn)
                continue
            cal = None
            if cmd.get("calibrate"):
                cal = statistics.median(timed(lambda: a @ a, job["calibration_budget_s"], clock, warmup=1))
            samples = timed(fn, job["budget_s"], clock, warmup=0 if i in warm else 2)
            warm.add(i)
            reply({"status": "ok", "median_s": statistics.median(samples), "n": len(samples), "calibration_s": cal})
        except Exception as exc:
            fns[i] = {"status": "error", "reason": ("%s: %s" % (type(exc).__name__, exc)).splitlines()[0]}
            reply(fns[i])

main()
'''


# ---- pure parts: acceptance markers, statistics, verdicts ---------------------------------------
def parse_accept_markers(messages: str) -> list[str]:
    """Case-id substrings accepted by ``[accept-regression: a, b]`` markers (``all`` accepts every case)."""
    patterns = []
    for match in ACCEPT_RE.finditer(messages or ""):
        patterns += [p.strip() for p in match.group(1).split(",") if p.strip()]
    return patterns


def accepted_by(case_id: str, patterns: list[str]) -> str | None:
    """The first marker pattern that accepts ``case_id``, or None."""
    for p in patterns:
        if p.lower() == "all" or p in case_id:
            return p
    return None


def block_order(pair_index: int) -> list[str]:
    """A B B A for even pairs, B A A B for odd ones: linear drift and who-goes-first both cancel."""
    return ["base", "new", "new", "base"] if pair_index % 2 == 0 else ["new", "base", "base", "new"]


@dataclass
class Measurements:
    """Per case id and side, one value per process that ran the case ok (processes come in pairs).

    ``raw_s``: the mean of the process's block medians for the case, in seconds. ``norm``: that divided
    by the process's calibration figure, the median of every calibration it timed (one just before its
    first block of each case). ``status`` keeps the last non-ok answer per (side, case id);
    ``calibration_s`` the calibration figure of every process per side.
    """

    norm: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {"base": {}, "new": {}})
    raw_s: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {"base": {}, "new": {}})
    status: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    calibration_s: dict[str, list[float]] = field(default_factory=lambda: {"base": [], "new": []})
    pairs: int = 0

    def add_process(self, side: str, blocks_by_case: dict[str, list[dict]]) -> None:
        """One process's answers: for each case id, its blocks (dicts from the worker)."""
        import statistics

        cals = [b["calibration_s"] for blocks in blocks_by_case.values() for b in blocks if b.get("calibration_s")]
        cal = statistics.median(cals) if cals else None
        if cal:
            self.calibration_s[side].append(cal)
        for case_id, blocks in blocks_by_case.items():
            bad = [b for b in blocks if b.get("status") != "ok"]
            if bad or not cal:
                last = bad[-1] if bad else {"status": "error", "reason": "no calibration measured"}
                self.status[(side, case_id)] = (last.get("status", "error"), last.get("reason", ""))
                continue
            raw = sum(b["median_s"] for b in blocks) / len(blocks)
            self.raw_s[side].setdefault(case_id, []).append(raw)
            self.norm[side].setdefault(case_id, []).append(raw / cal)


def judge(case_ids: list[str], m: Measurements, threshold: float, confidence: float,
          accept: list[str] | None = None):
    """compare's frame (same columns, statistics and verdicts) from the per-process values of both sides."""
    import numpy as np
    import pandas as pd

    from harness.compare import COLUMNS, case_seed, median_ratio_ci, time_verdict

    rows = []
    for cid in case_ids:
        rec = {c: None for c in COLUMNS}
        b, n = m.norm["base"].get(cid), m.norm["new"].get(cid)
        b_state = "ok" if b else m.status.get(("base", cid), ("absent", ""))[0]
        n_state = "ok" if n else m.status.get(("new", cid), ("absent", ""))[0]
        rec.update(case_id=cid, reason="", base_status=b_state, new_status=n_state)
        if not b or not n:
            if "absent" in (b_state, n_state):
                rec["verdict"] = "new" if b_state == "absent" else "missing"
            else:
                rec["verdict"] = ("broken" if b else "fixed") if bool(b) != bool(n) else "not run"
                rec["reason"] = (m.status.get(("new", cid)) or m.status.get(("base", cid)) or ("", ""))[1]
            rows.append(rec)
            continue
        ci = median_ratio_ci(b, n, confidence, seed=case_seed(cid))
        raw = median_ratio_ci(m.raw_s["base"][cid], m.raw_s["new"][cid], confidence, seed=case_seed(cid))
        verdict = time_verdict(ci, threshold)
        marker = accepted_by(cid, accept or [])
        if verdict == "slower" and marker:
            verdict, rec["reason"] = "accepted", f"[accept-regression: {marker}]"
        rec.update(verdict=verdict, base_time_s_median=float(np.median(m.raw_s["base"][cid])),
                   new_time_s_median=float(np.median(m.raw_s["new"][cid])), base_n_samples=len(b),
                   new_n_samples=len(n), time_ratio_raw=raw.ratio, time_ratio_raw_lo=raw.lo,
                   time_ratio_raw_hi=raw.hi, time_ratio=ci.ratio, time_ratio_lo=ci.lo, time_ratio_hi=ci.hi)
        rows.append(rec)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    cal_b = float(np.median(m.calibration_s["base"])) if m.calibration_s["base"] else None
    cal_n = float(np.median(m.calibration_s["new"])) if m.calibration_s["new"] else None
    frame.attrs.update(threshold=threshold, confidence=confidence, base_calibration_s=cal_b, new_calibration_s=cal_n,
                       calibration_ratio=cal_n / cal_b if cal_b and cal_n else None)
    return frame


# ---- git --------------------------------------------------------------------------------------
def _git(cwd: Path, *args: str, check: bool = True) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"git {' '.join(args)} failed in {cwd}: {exc}; hint: is git installed?") from None
    if check and out.returncode != 0:
        raise InputError(f"git {' '.join(args)} failed in {cwd}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip() if out.returncode == 0 else ""


def repo_root(tree: Path) -> Path:
    if not tree.is_dir():
        raise InputError(f"--tree {tree} is not a folder; hint: run attnbench ci inside a git checkout")
    root = _git(tree, "rev-parse", "--show-toplevel", check=False)
    if not root:
        raise InputError(f"{tree} is not inside a git checkout; hint: attnbench ci compares against a git ref, "
                         "run it in a clone of the repository")
    return Path(root)


def resolve_ref(root: Path, ref: str) -> str:
    sha = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if not sha:
        raise InputError(f"BASE_REF {ref!r} is not a commit in {root}; hint: a branch, tag or sha such as "
                         "origin/main or HEAD~1 (in a shallow CI clone, fetch it first: git fetch --depth=2)")
    return sha


def accept_markers(root: Path, base_sha: str) -> list[str]:
    """Markers in the commit messages of BASE..HEAD of the tested tree (HEAD's message if that is empty)."""
    messages = _git(root, "log", "--format=%B", f"{base_sha}..HEAD", check=False)
    if not messages.strip():
        messages = _git(root, "log", "-1", "--format=%B", "HEAD", check=False)
    return parse_accept_markers(messages)


# ---- measuring --------------------------------------------------------------------------------
class WorkerError(Exception):
    pass


class Worker:
    """A fresh process measuring cases with ``tree``'s code, one command at a time."""

    def __init__(self, tree: Path, cases: list[dict], budget_s: float, threads: int, clock: str,
                 timeout_s: float) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        self.tree, self.timeout_s = tree, timeout_s
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER_SOURCE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, cwd=tree, env=env, text=True,
                                     bufsize=1)
        job = {"cases": cases, "budget_s": budget_s, "calibration_budget_s": max(0.01, budget_s / 4),
               "threads": threads, "clock": clock}
        self._send(job)

    def _send(self, obj: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._died()) from None

    def _recv(self) -> dict:
        timer = threading.Timer(self.timeout_s, self.proc.kill)
        timer.start()
        try:
            for line in self.proc.stdout:
                if line.startswith(RESULT_MARKER):
                    return json.loads(line[len(RESULT_MARKER):])
        finally:
            timer.cancel()
        raise WorkerError(self._died())

    def _died(self) -> str:
        code = self.proc.wait()
        self.stderr.seek(0)
        tail = (self.stderr.read().strip().splitlines() or ["no output"])[-1]
        if code == -9:
            return f"a worker in {self.tree} was killed after --timeout-s {self.timeout_s:g} s without answering"
        return f"a worker in {self.tree} exited with code {code}: {tail}"

    def ready(self) -> dict:
        """The worker's first answer: which files it imported; refuses files outside its tree."""
        info = self._recv()
        files = [info["harness_file"], info["variants_file"], *info["variant_files"].values()]
        stray = [f for f in files if not Path(f).resolve().is_relative_to(self.tree.resolve())]
        if stray:
            raise WorkerError(f"a worker meant to run {self.tree} imported {stray[0]} instead; hint: check "
                              "PYTHONPATH and that the tree has harness/ and variants/")
        return info

    def measure(self, index: int, calibrate: bool) -> dict:
        self._send({"case": index, "calibrate": calibrate})
        return self._recv()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send({"quit": True})
                self.proc.wait(timeout=30)
            except (WorkerError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def measure_pairs(trees: dict[str, Path], cases: list[dict], n_pairs: int, m: Measurements, budget_s: float,
                  threads: int, clock: str, timeout_s: float, log) -> None:
    """``n_pairs`` pairs of fresh processes (one per side). Within a pair every case is measured in
    blocks ordered A B B A (or B A A B), one process waiting while the other measures."""
    for j in range(n_pairs):
        t0 = time.perf_counter()
        workers = {side: Worker(trees[side], cases, budget_s, threads, clock, timeout_s) for side in trees}
        try:
            for side, worker in workers.items():
                info = worker.ready()
                if m.pairs == 0:
                    log(f"  {side}: the worker imported harness from {Path(info['harness_file']).parent} and "
                        f"variants from {Path(info['variants_file']).parent}")
            order = block_order(m.pairs)
            blocks = {side: {rec["case_id"]: [] for rec in cases} for side in trees}
            for i, rec in enumerate(cases):
                for side in order:
                    got = blocks[side][rec["case_id"]]
                    got.append(workers[side].measure(i, calibrate=not got))
        finally:
            for worker in workers.values():
                worker.close()
        for side in trees:
            m.add_process(side, blocks[side])
        m.pairs += 1
        log(f"  process pair {j + 1}/{n_pairs} ({''.join(s[0].upper() for s in order)}): {len(cases)} cases in "
            f"{time.perf_counter() - t0:.1f} s")


# ---- the command ------------------------------------------------------------------------------
def render(frame, title: str, lines: list[str]) -> str:
    from harness.compare import markdown_table

    return "\n".join([f"### attnbench ci: {title}", "", *[f"{x}  " for x in lines], "", markdown_table(frame)])


def cmd_ci(args: argparse.Namespace) -> int:
    from harness.compare import check_threshold, summarize
    from harness.sweep import build_config, expand, load_toml

    check_threshold(args.threshold)
    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    for name in ("processes", "recheck_processes"):
        if getattr(args, name) < (2 if name == "processes" else 0):
            raise InputError(f"--{name.replace('_', '-')} must be >= {2 if name == 'processes' else 0}, got "
                             f"{getattr(args, name)}; hint: 5 per side is the default")
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    tree = repo_root(Path(args.tree or os.getcwd()).resolve())
    base_sha = resolve_ref(tree, args.base_ref)
    data = load_toml(args.config, False) if args.config else load_toml(args.preset, True)
    if args.budget_s is not None:
        data["budget_s"] = args.budget_s
    config = build_config(data)
    from harness.registry import get_variant

    cases = [c for c in expand(config) if not get_variant(c.variant, **dict(c.params)).not_supported_reasons(c)]
    records = [{"case_id": c.id, **c.to_record()} for c in cases]
    if not records:
        raise InputError(f"{args.config or 'preset ' + args.preset} has no case this machine can run; hint: "
                         "`attnbench list` says why")
    accept = accept_markers(tree, base_sha)
    head = _git(tree, "rev-parse", "--short", "HEAD", check=False) or "?"
    dirty = bool(_git(tree, "status", "--porcelain", "--untracked-files=no", check=False))
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="attnbench-ci-"))
    worktree = tmp / "base"
    ids = [r["case_id"] for r in records]
    timeout_s = args.timeout_s if args.timeout_s is not None else config.timeout_s + 60.0  # + start-up
    measure = dict(budget_s=config.budget_s, threads=args.threads, clock=args.clock, timeout_s=timeout_s, log=log)
    try:
        _git(tree, "worktree", "add", "--detach", str(worktree), base_sha)
        trees = {"base": worktree, "new": tree}
        m = Measurements()
        log(f"attnbench ci: {len(records)} cases, base {base_sha[:10]} ({args.base_ref}) checked out in {worktree} vs "
            f"{tree} (HEAD {head}{', dirty' if dirty else ''}); {args.processes} process pairs")
        try:
            measure_pairs(trees, records, args.processes, m, **measure)
            frame = judge(ids, m, args.threshold, args.confidence)
            flagged = frame.loc[frame["verdict"] == "slower", "case_id"].tolist()
            rechecked = []
            if flagged and args.recheck_processes:
                log(f"re-measuring {len(flagged)} flagged case(s) in {args.recheck_processes} more process pairs: "
                    f"{', '.join(flagged)}")
                rechecked = [r for r in records if r["case_id"] in flagged]
                measure_pairs(trees, rechecked, args.recheck_processes, m, **measure)
            frame = judge(ids, m, args.threshold, args.confidence, accept)
        except WorkerError as exc:
            raise InputError(f"could not measure: {exc}") from None
    finally:
        _git(tree, "worktree", "remove", "--force", str(worktree), check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        _git(tree, "worktree", "prune", check=False)
    wall = time.perf_counter() - started
    s = summarize(frame)
    failing = s["failing"]
    accepted = frame.loc[frame["verdict"] == "accepted", "case_id"].tolist()
    title = "REGRESSION" if failing else ("regression accepted" if accepted else "no regression")
    lines = [f"base `{base_sha[:10]}` ({args.base_ref}) vs `{tree}` (HEAD `{head}`{', uncommitted changes' if dirty else ''}), "
             f"same machine, same job, {wall:.0f} s",
             f"{len(records)} cases; {args.processes} fresh processes per side, run in pairs, every case measured "
             f"in blocks A B B A (B A A B in odd pairs); {args.threads} thread(s), {args.clock} time; each process "
             "times the calibration kernel beside every case",
             f"slower = {100 * args.confidence:g}% bootstrap CI lower bound of new/base (ratio of medians over "
             f"processes of calibration-normalized per-process medians) above {args.threshold:g}"]
    if rechecked:
        lines.append(f"re-measured {len(rechecked)} flagged case(s) in {args.recheck_processes} more process pairs, "
                     "judged on all pairs together")
    if failing:
        lines.append(f"**regressed: {', '.join(f'`{c}`' for c in failing)}**; to accept an intentional slowdown, "
                     "put `[accept-regression: <case-id substring or all>]` in the commit message")
    if accepted:
        lines.append(f"accepted by commit marker: {', '.join(f'`{c}`' for c in accepted)}")
    text = render(frame, title, lines)
    print(text)
    if args.json:
        records_out = json.loads(frame.to_json(orient="records"))
        Path(args.json).write_text(json.dumps({
            "base_ref": args.base_ref, "base_commit": base_sha, "tree": str(tree), "head": head, "dirty": dirty,
            "exit_code": 1 if failing else 0, "title": title, "wall_s": wall, "processes": args.processes,
            "recheck_processes": args.recheck_processes, "rechecked": [r["case_id"] for r in rechecked],
            "threshold": args.threshold, "confidence": args.confidence, "clock": args.clock, "threads": args.threads,
            "accept_markers": accept, "cases": records_out}, indent=2))
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        with open(summary_path, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 1 if failing else 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "ci", help="performance regression gate: this tree vs BASE_REF, measured here, interleaved",
        description="Measure the regression preset on BASE_REF (checked out in a temporary git worktree) and on "
                    "the working tree, on this machine, in fresh processes alternating A B B A, each timing a "
                    "calibration kernel beside every case; compare calibration-normalized medians with "
                    "`attnbench compare`'s bootstrap interval; re-measure flagged cases; print a Markdown verdict "
                    "(also appended to $GITHUB_STEP_SUMMARY). Exit 1 on a regression that no "
                    "[accept-regression: ...] marker in BASE_REF..HEAD accepts, 2 on bad input, else 0.")
    p.add_argument("base_ref", metavar="BASE_REF", help="git ref to compare against, e.g. origin/main or HEAD~1")
    p.add_argument("--tree", help="the checkout to test (default: the git checkout of the current directory)")
    p.add_argument("--preset", default="regression", help="preset to measure (default: regression)")
    p.add_argument("--config", help="a sweep TOML instead of the preset")
    p.add_argument("--processes", type=int, default=DEFAULT_PROCESSES,
                   help=f"fresh processes per side, run in pairs (default: {DEFAULT_PROCESSES})")
    p.add_argument("--recheck-processes", dest="recheck_processes", type=int, default=DEFAULT_RECHECK_PROCESSES,
                   help="more processes per side for flagged cases, 0 for none "
                        f"(default: {DEFAULT_RECHECK_PROCESSES})")
    p.add_argument("--threshold", type=float, default=1.10, help="slower when the ratio's CI is above this (1.10)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of the interval (default: 0.95)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads per worker (default: 1)")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="cpu: CPU time of the measuring thread(s), blind to time spent preempted by other "
                        "processes (default); wall: elapsed time")
    p.add_argument("--budget-s", dest="budget_s", type=float, help="timing seconds per case per process "
                                                                  "(default: the preset's budget_s)")
    p.add_argument("--timeout-s", dest="timeout_s", type=float,
                   help="longest wait for one answer of a worker (default: the preset's timeout_s + 60)")
    p.add_argument("--json", metavar="FILE", help="also write the verdict and every case's figures to FILE as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_ci)
