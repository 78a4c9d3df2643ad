"""Figures for the sweep harness (issue 3's note), kept as a benchmark, not as timed tests.

1. CPU peak memory (torch.profiler memory events) against the analytic bytes of naive's score and
   probability matrices (2 * B * H * N^2 * 4 bytes in float32), and chunked's peak beside it.
2. For three cases, the harness's median (harness.bench.timing.time_callable) next to a fresh
   torch.utils.benchmark Timer.blocked_autorange median for the same callable in the same process.

Usage: python scripts/bench_sweep.py [--budget-s 1.0]
(The quick preset's wall time and status table: `time attnbench sweep --preset quick`.)
"""

import argparse
import statistics

import torch
import torch.utils.benchmark as tbench

from harness.bench.memory import peak_memory
from harness.bench.prepare import prepare
from harness.bench.timing import time_callable
from harness.core.case import Case
from harness.core.registry import get_variant


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds per timer in part 2")
    args = ap.parse_args()

    print("1. CPU peak memory vs analytic bytes (B=1, H=8, D=64, float32, fwd, global)")
    print(f"   {'N':>6} {'analytic MiB':>13} {'naive MiB':>10} {'naive/analytic':>15} {'chunked MiB':>12} {'naive/chunked':>14}")
    for n in (1024, 2048, 4096):
        analytic = 2 * 8 * n * n * 4
        peaks = {}
        for name in ("naive", "chunked"):
            case = Case(name, seq_len=n, heads=8)
            prepared = prepare(get_variant(name), case)
            with prepared.context():
                peaks[name] = peak_memory(prepared.fn, "cpu")[0] + prepared.mask_mem_bytes
        print(f"   {n:6d} {analytic / 2**20:13.1f} {peaks['naive'] / 2**20:10.1f} {peaks['naive'] / analytic:15.3f} "
              f"{peaks['chunked'] / 2**20:12.1f} {peaks['naive'] / peaks['chunked']:14.1f}")

    print("2. harness median vs torch.utils.benchmark blocked_autorange median (same callable, same process)")
    cases = [Case("naive", seq_len=1024), Case("chunked", seq_len=2048, pass_="fwd_bwd"),
             Case("local", pattern="local", window=128, seq_len=4096)]
    for case in cases:
        prepared = prepare(get_variant(case.variant), case)
        fn = prepared.fn
        hs, rs = [], []
        for i in range(args.rounds):  # alternate, swapping who goes first, so drift hits both alike
            timer = tbench.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
            pair = [lambda: hs.append(time_callable(fn, "cpu", args.budget_s).median),
                    lambda: rs.append(timer.blocked_autorange(min_run_time=args.budget_s).median)]
            with prepared.context():
                for step in (pair if i % 2 == 0 else pair[::-1]):
                    step()
        harness, ref = statistics.median(hs), statistics.median(rs)
        print(f"   {case.id:55s} harness {harness * 1e3:8.3f} ms  blocked_autorange {ref * 1e3:8.3f} ms  "
              f"ratio {harness / ref:.3f}  (median of {args.rounds} alternating rounds each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
