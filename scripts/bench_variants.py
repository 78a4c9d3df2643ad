"""Own efficient variants beside the best peer on the same pattern, in one process.

Measures, on the CPU (float32, B=1, H=8, D=64; medians of alternating rounds, each round calling
every cell of a group once, in an order that rotates from round to round). A ratio of two cells of one
group is the median of their per-round ratios (each pair of samples taken seconds apart, so a drift of
the machine's speed over the run cancels):

* local (w=256) at N=16384, forward: own ``local`` against ``flex`` (FlexAttention) and against
  ``sdpa_flash`` on the same local pattern (SDPA's fused kernel with a dense N x N boolean mask);
* global at N=4096 and 8192, forward: ``chunked`` against ``sdpa_flash``, one group per N (three times
  the rounds: the calls are short and the ratio is judged at 1.05);
* hierarchical (s = round(sqrt N)) at N=4096, 8192, 16384, forward: the time exponent from 4K to 16K;
* forward+backward: own ``local`` against ``flex``, ``chunked`` against ``sdpa_flash`` at N=8192,
  ``hierarchical`` at N=16384 (Flex has no CPU backward: its row says so and its target is reported
  as not applicable, never as met; SDPA's dense-mask local backward, ~50 s a call here, is left out);
* peak memory of each of the three at its largest N, forward, against the analytic minimum (the output
  tensor, B * H * N * D * 4 bytes; the inputs are not counted), via ``harness.bench.memory``.

Every own output is compared with the peer's output on the same inputs (relative error); a wrong
kernel is reported and fails the run whatever its speed.

TARGETS (the run exits 1 with one line per missed target; 0 only when every applicable one is met):
  local_vs_flex        flex time / local time at N=16384 (w=256)          >= 1.0
  local_vs_sdpa        sdpa_flash time / local time at N=16384 (w=256)    >= 12
  chunked_vs_sdpa_<N>  chunked time / sdpa_flash time, global, N=4K, 8K   <= 1.05
  hier_exponent        log(t16K / t4K) / log(4), hierarchical s=sqrt(N)   <= 1.35
  <v>_fwd_bwd_vs_flex  own fwd+bwd / flex fwd+bwd                          <= 1.2 (n/a where flex has none)
  <v>_peak_mem         peak bytes / output bytes at the largest N          <= 1.5
  <v>_error            relative error against the peer's output           <= 1e-5 (float32 tolerance)

--quick divides every N by 8 (2048, 512/1024, 512..2048): a cheap smoke run, judged by the same
targets (small N can miss them; the exit status still says so).

Run: .venv/bin/python scripts/bench_variants.py [--quick] [--rounds 5] [--no-fwd-bwd]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch

from harness.bench.memory import track_allocations
from harness.bench.prepare import prepare
from harness.core.case import Case
from harness.core.reference import relative_error
from harness.core.registry import get_variant
from harness.core.tolerances import TOLERANCES

B, H, D, WINDOW = 1, 8, 64, 256


@dataclass
class Cell:
    """One (variant, case) with its prepared callable and its raw per-call samples (seconds)."""

    label: str
    case: Case
    prepared: object | None = None
    reason: str | None = None  # why it did not run
    samples: list[float] = field(default_factory=list)
    setup_s: float = 0.0
    out: torch.Tensor | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


def make_cell(label: str, variant: str, **case_fields) -> Cell:
    case = Case(variant, batch=B, heads=H, head_dim=D, **case_fields)
    cell = Cell(label, case)
    v = get_variant(variant)
    reasons = v.not_supported_reasons(case)
    if reasons:
        cell.reason = "; ".join(reasons)
        return cell
    t0 = time.perf_counter()
    cell.prepared = prepare(v, case)
    cell.setup_s = time.perf_counter() - t0
    with cell.prepared.context():  # warm call, kept to compare outputs
        res = cell.prepared.fn()
    cell.out = (res if case.pass_ == "fwd" else res[0]).detach()
    return cell


def measure_group(cells: list[Cell], rounds: int, min_sample_s: float = 0.05) -> None:
    """Alternating rounds: every runnable cell once per round, the order rotating between rounds.

    One sample is the mean of ``loops`` back-to-back calls, ``loops`` chosen per cell from a timed
    call so that a sample lasts at least ``min_sample_s`` (one call when a call is longer)."""
    live = [c for c in cells if c.prepared is not None]
    loops = {}
    for c in live:
        with c.prepared.context():
            t0 = time.perf_counter()
            c.prepared.fn()
            loops[c.label] = max(1, math.ceil(min_sample_s / max(time.perf_counter() - t0, 1e-6)))
    for r in range(rounds):
        for c in live[r % len(live):] + live[:r % len(live)] if live else []:
            with c.prepared.context():
                t0 = time.perf_counter()
                for _ in range(loops[c.label]):
                    c.prepared.fn()
                c.samples.append((time.perf_counter() - t0) / loops[c.label])


def paired(a: Cell, b: Cell) -> float | None:
    """The median over rounds of a's sample over b's taken in the same round (cells of one group)."""
    if len(a.samples) != len(b.samples):
        return None
    pairs = [x / y for x, y in zip(a.samples, b.samples) if y > 0]
    return statistics.median(pairs) if pairs else None


def peak_ratio(cell: Cell) -> tuple[int, int]:
    """(peak bytes of one forward call above what existed before it, output bytes)."""
    with cell.prepared.context():
        alloc = track_allocations(cell.prepared.fn, cell.case.device, keep_result=False)
    b, h, n, d = cell.case.shape
    return alloc.peak_bytes, b * h * n * d * torch.empty((), dtype=cell.case.torch_dtype).element_size()


def fmt_ms(s: float | None) -> str:
    return "   n/a   " if s is None else f"{s * 1e3:9.1f}"


def show(cells: list[Cell]) -> None:
    for c in cells:
        if c.reason:
            print(f"  {c.label:<34} not run: {c.reason}")
        else:
            spread = (f"[{min(c.samples) * 1e3:.1f}..{max(c.samples) * 1e3:.1f}]" if c.samples else "")
            print(f"  {c.label:<34} {fmt_ms(c.median)} ms  {spread:<20} setup {c.setup_s:.1f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="every N divided by 8 (a smoke run)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per group (default 5)")
    ap.add_argument("--no-fwd-bwd", action="store_true", help="skip the forward+backward group")
    args = ap.parse_args(argv)
    scale = 8 if args.quick else 1
    n_local, n_glob, n_hier = 16384 // scale, (4096 // scale, 8192 // scale), (4096 // scale, 8192 // scale,
                                                                                16384 // scale)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}, "
          f"B={B} H={H} D={D} float32 cpu, {args.rounds} rounds{' (quick)' if args.quick else ''}")
    missed: list[str] = []
    tol = TOLERANCES["float32"][0]
    grad_tol = TOLERANCES["float32"][1]

    def judge(name: str, value: float | None, op: str, bound: float, why: str = "") -> None:
        if value is None:
            print(f"  {name:<30} n/a{(': ' + why) if why else ''}")
            return
        ok = value >= bound if op == ">=" else value <= bound
        shown = f"{value:9.2e}" if bound < 0.01 else f"{value:9.3f}"
        print(f"  {name:<30} {shown}  (target {op} {bound:g})  {'met' if ok else 'MISSED'}")
        if not ok:
            missed.append(f"{name}: {shown.strip()}, target {op} {bound:g}")

    def err(own: Cell, peer: Cell, name: str, bound: float) -> None:
        if own.out is not None and peer.out is not None:
            e = relative_error(own.out, peer.out)
            judge(f"{name}_error", e, "<=", bound)

    local_kw = dict(pattern="local", window=WINDOW, seq_len=n_local)
    print(f"\n== local w={WINDOW}, N={n_local}, forward")
    g_local = [make_cell("local", "local", **local_kw), make_cell("flex", "flex", **local_kw),
               make_cell("sdpa_flash (dense mask)", "sdpa_flash", **local_kw)]
    measure_group(g_local, args.rounds)
    show(g_local)

    print("\n== global, forward")
    g_glob = []
    for n in n_glob:  # one group per N: each pair back to back, in the order AB, BA, AB, ...
        pair = [make_cell(f"chunked N={n}", "chunked", seq_len=n), make_cell(f"sdpa_flash N={n}", "sdpa_flash",
                                                                              seq_len=n)]
        measure_group(pair, 3 * args.rounds)  # short calls, a ratio judged at 1.05: three times the rounds
        g_glob += pair
    show(g_glob)

    print("\n== hierarchical s=round(sqrt N), forward")
    g_hier = [make_cell(f"hierarchical N={n} s={round(math.sqrt(n))}", "hierarchical", pattern="hierarchical",
                        segment=round(math.sqrt(n)), seq_len=n) for n in n_hier]
    measure_group(g_hier, args.rounds)
    show(g_hier)

    g_bwd = []
    if not args.no_fwd_bwd:
        print("\n== forward+backward")
        bk = dict(pass_="fwd_bwd")
        g_bwd = [make_cell("local fwd_bwd", "local", **local_kw, **bk),
                 make_cell("flex fwd_bwd", "flex", **local_kw, **bk),
                 make_cell(f"chunked fwd_bwd N={n_glob[1]}", "chunked", seq_len=n_glob[1], **bk),
                 make_cell(f"sdpa_flash fwd_bwd N={n_glob[1]}", "sdpa_flash", seq_len=n_glob[1], **bk),
                 make_cell(f"hierarchical fwd_bwd N={n_hier[-1]}", "hierarchical", pattern="hierarchical",
                           segment=round(math.sqrt(n_hier[-1])), seq_len=n_hier[-1], **bk)]
        measure_group(g_bwd, max(3, args.rounds // 2))
        show(g_bwd)

    print("\n== peak memory, forward, largest N (analytic minimum: the output, inputs aside)")
    mem = {}
    for cell in (g_local[0], g_glob[-2], g_hier[-1]):
        peak, minimum = peak_ratio(cell)
        mem[cell.case.variant] = peak / minimum
        print(f"  {cell.label:<34} peak {peak / 2**20:8.1f} MiB, minimum {minimum / 2**20:6.1f} MiB, "
              f"ratio {peak / minimum:.2f}")

    print("\n== targets")
    loc, flex, sdpa = g_local
    ratio = lambda a, b: (a.median / b.median) if a.median and b.median else None  # noqa: E731
    judge("local_vs_flex", paired(flex, loc), ">=", 1.0, flex.reason or "")
    judge("local_vs_sdpa", paired(sdpa, loc), ">=", 12.0, sdpa.reason or "")
    err(loc, sdpa, "local", tol)
    for i, n in enumerate(n_glob):
        ch, sd = g_glob[2 * i], g_glob[2 * i + 1]
        judge(f"chunked_vs_sdpa_{n}", paired(ch, sd), "<=", 1.05)
        err(ch, sd, f"chunked_{n}", tol)
    t4, t16 = g_hier[0].median, g_hier[-1].median
    judge("hier_exponent", math.log(t16 / t4) / math.log(n_hier[-1] / n_hier[0]) if t4 and t16 else None, "<=", 1.35)
    if g_bwd:
        lb, fb, cb, cs, hb = g_bwd
        judge("local_fwd_bwd_vs_flex", paired(lb, fb), "<=", 1.2, f"flex: {fb.reason}" if fb.reason else "")
        judge("chunked_fwd_bwd_vs_flex", None, "<=", 1.2, "not measured on global (flex's CPU backward is absent)")
        judge("hierarchical_fwd_bwd_vs_flex", None, "<=", 1.2, "flex has no hierarchical pattern")
        for info, a, b in (("chunked_fwd_bwd / sdpa", cb, cs), ("local_fwd_bwd / local", lb, loc),
                           ("hierarchical_fwd_bwd / fwd", hb, g_hier[-1])):
            if ratio(a, b):
                print(f"  {'(info) ' + info:<30} {ratio(a, b):9.3f}  (time ratio, not a target)")
        err(cb, cs, "chunked_fwd_bwd_dq", grad_tol)
    for name, value in mem.items():
        judge(f"{name}_peak_mem", value, "<=", 1.5)
    print(f"\nload {os.getloadavg()[0]:.2f}; {len(missed)} target(s) missed")
    for line in missed:
        print(f"MISSED {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
