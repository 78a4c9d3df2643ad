"""Efficiency targets of the core variants, each a ratio measured in one run (exit 1 when one is missed).

CPU, float32, B=1, H=8, D=64, forward:
  1. local (w=256) at N=16384 at least 5x faster than SDPA with a boolean band mask;
  2. chunked at N=8192 with at most 1/10 of naive's peak memory, and no slower than naive at N=4096;
  3. hierarchical (s = round(sqrt(N))) growing no faster than N^1.6 from 4K to 16K.

Time: harness.bench.timing.time_callable (warm-up, then timeit blocks sized to the budget; median).
Memory: harness.bench.memory.peak_memory: torch.profiler(profile_memory=True) records every allocation and
free the call makes through torch's CPU allocator; the peak of their running sum (inputs excluded).

Usage: python scripts/bench_foundation.py [--budget-s 1.0]
"""

import argparse
import math
import sys

import numpy as np
import torch

from harness.bench.memory import peak_memory
from harness.bench.prepare import prepare
from harness.bench.timing import time_callable
from harness.core.case import Case
from harness.core.registry import get_variant


def run(name, case, budget, memory=False):
    variant = get_variant(name, **dict(case.params))
    prepared = prepare(variant, case)
    with prepared.context():
        t = time_callable(prepared.fn, "cpu", budget)
        peak = peak_memory(prepared.fn, "cpu")[0] + prepared.mask_mem_bytes if memory else None
    mem = f", peak {peak / 2**20:9.1f} MiB" if peak is not None else ""
    print(f"  {name:13s} {case.pattern_obj.label:24s} N={case.seq_len:6d}: median {t.median * 1e3:9.2f} ms "
          f"(IQR {t.iqr * 1e3:.2f} ms, {len(t.samples_s)} samples){mem}", flush=True)
    return t.median, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=1.0)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    base = dict(batch=1, heads=8, head_dim=64, dtype="float32", device="cpu")
    ok = True

    print("1. local (w=256) vs SDPA with a band mask, N=16384")
    c = dict(base, pattern="local", window=256, seq_len=16384)
    t_local, _ = run("local", Case("local", **c), args.budget_s)
    for sdpa in ("sdpa_flash", "sdpa_math"):
        t_sdpa, _ = run(sdpa, Case(sdpa, **c), args.budget_s)
        ratio = t_sdpa / t_local
        good = ratio >= 5
        ok &= good or sdpa != "sdpa_flash"
        print(f"   -> local is {ratio:.1f}x faster than {sdpa} (goal >= 5x): {'PASS' if good else 'FAIL'}")

    print("2. chunked vs naive, global")
    _, m_naive = run("naive", Case("naive", **dict(base, seq_len=8192)), args.budget_s, memory=True)
    _, m_chunk = run("chunked", Case("chunked", **dict(base, seq_len=8192)), args.budget_s, memory=True)
    good = m_chunk * 10 <= m_naive
    ok &= good
    print(f"   -> N=8192 peak memory: chunked/naive = {m_chunk / m_naive:.4f} (goal <= 0.1): {'PASS' if good else 'FAIL'}")
    t_naive, _ = run("naive", Case("naive", **dict(base, seq_len=4096)), args.budget_s)
    t_chunk, _ = run("chunked", Case("chunked", **dict(base, seq_len=4096)), args.budget_s)
    good = t_chunk <= t_naive
    ok &= good
    print(f"   -> N=4096 time: chunked/naive = {t_chunk / t_naive:.2f} (goal <= 1): {'PASS' if good else 'FAIL'}")

    print("3. hierarchical, s = round(sqrt(N)), N = 4096 .. 16384")
    ns, ts = [4096, 8192, 16384], []
    for n in ns:
        s = round(math.sqrt(n))
        ts.append(run("hierarchical", Case("hierarchical", **dict(base, pattern="hierarchical", segment=s, seq_len=n)),
                      args.budget_s)[0])
    slope = float(np.polyfit(np.log(ns), np.log(ts), 1)[0])
    good = slope <= 1.6
    ok &= good
    print(f"   -> fitted exponent of time vs N: {slope:.2f} (goal <= 1.6): {'PASS' if good else 'FAIL'}")
    if not ok:
        print("bench_foundation: target missed (the lines marked FAIL above)", file=sys.stderr)
        return 1
    print("bench_foundation: every target met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
