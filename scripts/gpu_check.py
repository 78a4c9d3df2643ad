"""GPU check: every variant on CUDA against the float64 reference, then a short CUDA sweep, judged.

Target: on a machine where torch sees a CUDA device, no cell of `attnbench check --device cuda` is
wrong or raises, and no row of a short sweep (the `gpu` preset at N = 1024 and 4096, H=8, B=1, D=64:
float16 and bfloat16, fwd and fwd_bwd, every variant) is `wrong`, `error`, `timeout` or `oom`; and no cell is
unsupported unless that is expected:

* expected: the cell lies outside the variant's declared capabilities (a reason of the form
  `field=value ...`, as `Variant.not_supported_reasons` and each variant's declared limits give
  them: `dtype=...`, `pattern=...`, `pass=fwd_bwd: ...`, `q_len=...`), or the variant's optional
  dependency is missing or not built for this torch (xformers not installed, or built for another
  torch or CUDA);
* unexpected: any other reason, such as a backend (torch's SDPA checks, xformers' dispatcher)
  refusing a case the variant declares it supports.

Exit status: 0 when the target is met; 1 with one line per missed cell and a last line saying how
many missed; 2 when there is no CUDA device (this check needs a GPU) or the sweep could not run.

Usage: python scripts/gpu_check.py [--out DIR] [--sweep-timeout-s 300]   (bash scripts/gpu_check.sh
installs the project around the machine's own CUDA torch first)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

FAILED_STATUSES = ("wrong", "error", "timeout", "oom")
# A declared limit names the case field it concerns: "dtype=float64 (supported: ...)".
DECLARED = re.compile(r"^[a-z_]+=")
# What a missing or mismatched build of an optional dependency says (xformers' own messages).
MISSING_BUILD = ("cannot be imported", "can't load C++/CUDA extensions", "operator wasn't built")
SWEEP = ["--preset", "gpu", "--seq-lens", "1024,4096", "--heads", "8", "--batch", "1", "--head-dims", "64",
         "--budget-s", "0.05", "--timeout-s", "60", "--quiet"]


def expected_unsupported(reasons: list[str]) -> bool:
    """True when a reason puts the cell outside the variant's declared capabilities, or says its
    optional dependency is missing; False when only a backend's own refusals remain."""
    return any(DECLARED.match(r.strip()) or any(m in r for m in MISSING_BUILD) for r in reasons)


def no_cuda_line() -> str | None:
    """The one-line reason this check cannot run here, or None when torch sees a CUDA device."""
    import torch

    if torch.cuda.is_available():
        return None
    return (f"gpu_check: no CUDA device visible to torch (torch {torch.__version__}, cuda {torch.version.cuda}); "
            "this check needs a GPU")


def check_misses() -> tuple[list[str], int]:
    """`attnbench check --device cuda`'s cells that miss the target, and how many cells ran."""
    from harness.bench.check import run_check

    misses, ran = [], 0
    for res in run_check("cuda"):
        where = f"{res.variant} {res.pattern} cuda/{res.dtype} {res.pass_}" + (
            f" [{res.shape.label}]" if res.shape is not None else "")
        if res.skipped:
            if not expected_unsupported(res.reasons):
                misses.append(f"check: unexpectedly unsupported: {where}: {'; '.join(res.reasons)}")
            continue
        ran += 1
        if not res.ok:
            misses.append(f"check: {'raised' if res.exception else 'wrong'}: {res.describe()}")
    return misses, ran


def sweep_misses(out: Path, timeout_s: float) -> tuple[list[str], int]:
    """Rows of the short CUDA sweep that miss the target, and how many rows are ok."""
    from harness.store.load import load_run

    cmd = [sys.executable, "-m", "harness", "sweep", *SWEEP, "--out", str(out)]
    try:
        proc = subprocess.run(cmd, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"gpu_check: the sweep ran past {timeout_s:g} s ({' '.join(cmd)}); "
                         "hint: --sweep-timeout-s 600") from None
    if proc.returncode != 0 or not (out / "run.json").exists():
        raise SystemExit(f"gpu_check: the sweep failed to run (exit {proc.returncode}): {' '.join(cmd)}")
    df, _ = load_run(out)
    misses = []
    for row in df.to_dict("records"):
        status, reason = row["status"], str(row.get("reason") or "")
        if status in FAILED_STATUSES:
            misses.append(f"sweep: {status}: {row['case_id']}: {reason}")
        elif status == "unsupported" and not expected_unsupported(reason.split("; ")):
            misses.append(f"sweep: unexpectedly unsupported: {row['case_id']}: {reason}")
    return misses, int((df["status"] == "ok").sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="the sweep's run folder (default: results/gpu-check-<UTC time>)")
    ap.add_argument("--sweep-timeout-s", type=float, default=300.0, help="bound on the sweep (default: 300)")
    args = ap.parse_args(argv)
    reason = no_cuda_line()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    import torch

    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: {torch.cuda.get_device_name()}", flush=True)
    check, checked = check_misses()
    print(f"check: {checked} cells ran, {len(check)} missed", flush=True)
    out = Path(args.out or f"results/gpu-check-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    sweep, ok_rows = sweep_misses(out, args.sweep_timeout_s)
    print(f"sweep ({out}): {ok_rows} rows ok, {len(sweep)} missed", flush=True)
    misses = check + sweep
    for line in misses:
        print(line)
    if misses:
        print(f"gpu_check: FAILED: {len(misses)} cells wrong, erroring or unexpectedly unsupported "
              f"({len(check)} in the check, {len(sweep)} in the sweep)", file=sys.stderr)
        return 1
    print("gpu_check: passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
