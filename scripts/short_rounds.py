"""Is a short call's round as reproducible on its share of the budget as on the whole of it? (exit 1 when not)

A multi-threaded CPU call under 15 ms (harness.analysis.trust.SHORT_BELOW_S) is measured in
``--short-rounds`` rounds (default 3; harness.analysis.rounds.rounds_for), each timed for its share of
``--budget-s`` (docs/trust.md). This measures six such cells of the main job, each re-timed ``--reps``
times on a 1/N share of the budget and on the whole, the two alternating so that both meet the same
moments of the machine, and compares how far each round's median lies from the cell's best round, and
how often two consecutive rounds agree within 15% (what the ``unreproduced`` flag asks).

Targets: share-budget round pairs agree within 15% at most ``SLACK`` less often than whole-budget
ones; N share-budget measurements take at most ``COST`` times one whole one's wall time.

Run: python scripts/short_rounds.py [--rounds 3] [--reps 8] [--budget-s 0.75]   (about 2 minutes; the
CPU's own threads)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from harness.core.case import Case
from harness.run import executors
from harness.run.validate import build_config

SLACK, COST = 0.10, 1.4
CHUNKED = (("chunk_k", "auto"), ("chunk_q", "auto"), ("kernel", "auto"))
CASES = [Case("naive", pattern="global", seq_len=512), Case("local", pattern="local", window=128, seq_len=512),
         Case("sdpa_flash", pattern="global", causal=True, seq_len=512),
         Case("hierarchical", pattern="hierarchical", segment=23, seq_len=512),
         Case("chunked", pattern="local", window=128, seq_len=512, params=CHUNKED),
         Case("local", pattern="local", window=128, causal=True, seq_len=1024)]


def agree(medians: list[float]) -> tuple[int, int]:
    """Consecutive pairs of rounds (1-2, 3-4, ...) within 15% of each other, and the pairs."""
    pairs = list(zip(medians[::2], medians[1::2]))
    return sum(max(a, b) / min(a, b) <= 1.15 for a, b in pairs), len(pairs)


def missed(agreed: dict[str, float], cost: float, rounds: int) -> list[str]:
    """The targets missed, given each arm's share of round pairs within 15% and one share-budget
    measurement's wall time over a whole one's (``rounds`` of them make a cell's rounds)."""
    out = []
    if agreed["share"] < agreed["whole"] - SLACK:
        out.append(f"1/{rounds}-budget rounds agree within 15% in {agreed['share']:.0%} of pairs, whole ones in "
                   f"{agreed['whole']:.0%} (slack {SLACK:.0%})")
    if rounds * cost > COST:
        out.append(f"{rounds} rounds on 1/{rounds} of the budget take {rounds * cost:.2f}x one whole measurement's "
                   f"time (target at most {COST})")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="a cell's rounds, each on 1/N of the budget (default 3)")
    p.add_argument("--reps", type=int, default=8, help="rounds per cell and budget (default 8)")
    p.add_argument("--budget-s", type=float, default=0.75, help="the whole budget (default 0.75, the main job's)")
    args = p.parse_args()
    arms = {name: executors.InProcess(build_config({"variants": ["all"], "retries": 0, "budget_s": args.budget_s,
                                                     "short_rounds": short}), {})
            for name, short in (("share", args.rounds), ("whole", 1))}
    medians = {(name, c.id): [] for name in arms for c in CASES}
    wall = dict.fromkeys(arms, 0.0)
    first = {(name, c.id): runner.metrics(c) for c in CASES for name, runner in arms.items()}  # its check: not compared
    for i in range(args.reps):
        for case in CASES:
            for name in ("share", "whole") if i % 2 == 0 else ("whole", "share"):
                t0 = time.perf_counter()
                row = arms[name].metrics(case, first[(name, case.id)], retries=0)  # time only, as a round does
                wall[name] += time.perf_counter() - t0
                if row.get("status") != "ok":
                    print(f"short_rounds: {case.id} did not run ({row.get('reason')})")
                    return 1
                medians[(name, case.id)].append(row["time_s_median"])
    agreed = {}
    for name in arms:
        ratios = [m / min(ms) for c in CASES for ms in [medians[(name, c.id)]] for m in ms]
        pairs = [agree(medians[(name, c.id)]) for c in CASES]
        agreed[name] = sum(a for a, _ in pairs) / sum(n for _, n in pairs)
        print(f"{name:5}: {wall[name] / args.reps / len(CASES):.2f} s a measurement; round median over the cell's "
              f"best: median {statistics.median(ratios):.3f}, 90th percentile {sorted(ratios)[int(0.9 * len(ratios))]:.3f}; "
              f"round pairs within 15%: {sum(a for a, _ in pairs)} of {sum(n for _, n in pairs)}")
    cost = wall["share"] / wall["whole"]
    miss = missed(agreed, cost, args.rounds)
    print("short_rounds: " + ("; ".join(miss) if miss else f"met ({args.rounds} rounds cost {args.rounds * cost:.2f}x)"))
    return 1 if miss else 0


if __name__ == "__main__":
    sys.exit(main())
