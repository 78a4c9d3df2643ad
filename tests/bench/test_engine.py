"""The engine: preparation happens once, the timed callable is the kernel, masks are cheap, flex never
recompiles while timed, and memory accounts for the prepared constants."""

import statistics

import time

import pytest
import torch

from harness.bench.measure import measure
from harness.bench.memory import track_allocations
from harness.bench.prepare import prepare
from harness.bench.timing import CONTENDED, MIN_FAST, SLOW_EXTRA, runqueue_wait_s, time_callable, used_mask
from harness.core.case import Case
from harness.core.errors import UnsupportedCaseError
from harness.core.patterns import Pattern
from harness.core.registry import get_variant


@pytest.mark.parametrize("name", ["naive", "sdpa_flash", "local", "hierarchical", "chunked"])
def test_validation_reasons_and_constants_run_once_per_case_not_per_call(name, monkeypatch):
    variant = get_variant(name)
    kind = [p for p in variant.patterns if p in ("global", "local", "hierarchical")][-1]
    case = Case(name, kind, window=8 if kind == "local" else None, segment=8 if kind == "hierarchical" else None,
                heads=2, seq_len=64, head_dim=16)
    calls = {"reasons": 0, "constants": 0, "check_qkv": 0}
    reasons, constants = variant.not_supported_reasons, variant.constants

    def count(key, fn):
        def wrapped(*a, **k):
            calls[key] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(variant, "not_supported_reasons", count("reasons", reasons))
    monkeypatch.setattr(variant, "constants", count("constants", constants))
    import harness.core.registry as registry

    monkeypatch.setattr(registry, "check_qkv", count("check_qkv", registry.check_qkv))
    prepared = prepare(variant, case)
    assert calls == {"reasons": 1, "constants": 1, "check_qkv": 0}
    with prepared.context():
        timing = time_callable(prepared.fn, "cpu", budget_s=0.02, min_samples=5)
    assert timing.number_per_sample * len(timing.samples_s) >= 5
    assert calls == {"reasons": 1, "constants": 1, "check_qkv": 0}


def test_prepare_refuses_an_unsupported_case_with_its_reasons():
    with pytest.raises(UnsupportedCaseError, match="no CPU kernel"):
        prepare(get_variant("sdpa_efficient"), Case("sdpa_efficient", seq_len=16, heads=1))


@pytest.mark.parametrize("kind,causal", [("local", False), ("local", True), ("global", True), ("hierarchical", True)])
def test_masks_are_built_without_n_by_n_integer_temporaries(kind, causal):
    n = 1024
    pattern = Pattern(kind, causal, window=64 if kind == "local" else None, segment=32 if kind == "hierarchical" else None)
    alloc = track_allocations(lambda: pattern.mask(n), "cpu")
    cols = alloc.result.shape[1]
    assert alloc.result.dtype == torch.bool
    assert alloc.net_bytes <= n * cols + 64 * 1024  # the boolean result and O(N) position vectors
    assert alloc.peak_bytes <= 3 * n * cols + 64 * 1024  # at most two boolean temporaries beside it (int64: 8x)


def test_pairs_are_closed_form_for_any_length():
    n = 10**12  # a loop over positions would not finish: the exact counts come from a closed form
    assert Pattern("local", False, window=3).pairs(n) == n + 2 * (3 * n - 6)
    assert Pattern("local", True, window=3).pairs(n) == 6 + (n - 3) * 4
    assert Pattern("hierarchical", True, segment=10**6).pairs(n) > 0


def test_rows_carry_mask_time_and_bytes_and_peak_counts_the_mask():
    """naive local, B=1 H=1 N=1024 w=128: one boolean N x N mask (prepared once) + scores + probabilities."""
    n = 1024
    case = Case("naive", "local", window=128, heads=1, seq_len=n, head_dim=64)
    rec = measure(get_variant("naive"), case, budget_s=0.02)
    assert rec["mask_s"] > 0 and rec["setup_s"] >= rec["mask_s"]
    assert abs(rec["mask_mem_bytes"] - n * n) <= 0.01 * n * n
    analytic = n * n * (4 + 4 + 1)  # float32 scores, float32 probabilities, boolean mask
    assert abs(rec["peak_mem_bytes"] - analytic) <= 0.15 * analytic, rec["peak_mem_bytes"] / analytic
    assert rec["rel_error"] < 1e-5


@pytest.mark.slow
def test_flex_compiles_in_prepare_and_never_recompiles_while_timed():
    """Compiled on distinct inputs in prepare; warm-up and timing run under fail_on_recompile and the
    dynamo frame counter does not move."""
    from torch._dynamo.utils import counters

    variant = get_variant("flex")
    case = Case("flex", "local", window=16, heads=2, seq_len=128, head_dim=16)
    prepared = prepare(variant, case)
    assert prepared.setup_s > prepared.mask_s > 0
    frames = sum(counters["frames"].values())
    with prepared.context():
        time_callable(prepared.fn, "cpu", budget_s=0.05, warmup=2, min_samples=5)
    assert sum(counters["frames"].values()) == frames, dict(counters["frames"])


def test_cuda_blocks_are_timed_to_the_end_of_their_kernels(monkeypatch):
    """On CUDA the clock synchronizes before every reading (a custom timer bypasses torch's own sync):
    here a fake synchronize that takes 3 ms of the fake clock must show up in every sample."""
    now = [0.0]
    syncs = []

    def synchronize():
        syncs.append(1)
        now[0] += 0.003  # the kernels launched since the last reading finish

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    t = time_callable(lambda: None, "cuda", budget_s=0.05, warmup=1, timer=lambda: now[0], min_samples=5)
    assert len(syncs) >= 2 * len(t.samples_s) and t.median > 0
    assert all(s * t.number_per_sample == pytest.approx(0.003) for s in t.samples_s)


def test_a_call_longer_than_a_samples_share_of_the_budget_warms_up_once():
    """Warm-up calls stop once they outlast one sample's share of the budget (budget / min_samples): a
    call of 20 ms under a 10 ms budget warms up once (sleeping only ever takes longer), and under 50 ms
    for 5 samples; a call of nothing warms up as often as asked."""
    slow = time_callable(lambda: time.sleep(0.02), "cpu", budget_s=0.01, warmup=3, min_samples=2)
    assert slow.warmup_calls == 1 and len(slow.samples_s) >= 2
    # one sample's share of the budget: 5 samples of 20 ms outlast 0.05 s, so one warm-up call will do
    shared = time_callable(lambda: time.sleep(0.02), "cpu", budget_s=0.05, warmup=3, min_samples=5)
    assert shared.warmup_calls == 1 and len(shared.samples_s) >= 5
    assert time_callable(lambda: None, "cpu", budget_s=10.0, warmup=3, timer=iter(range(10**6)).__next__).warmup_calls == 3


def test_first_makes_the_first_warm_up_call_and_only_that_one():
    """``first`` stands in for the first warm-up call (the sweep records peak memory there), never timed."""
    calls = []
    t = time_callable(lambda: calls.append("fn"), "cpu", budget_s=10.0, warmup=2, timer=iter(range(10**6)).__next__,
                      first=lambda: calls.append("first"))
    assert calls[:2] == ["first", "fn"] and calls.count("first") == 1 and t.warmup_calls == 2
    calls.clear()
    time_callable(lambda: calls.append("fn"), "cpu", budget_s=10.0, warmup=0, timer=iter(range(10**6)).__next__,
                  first=lambda: calls.append("first"))
    assert calls[0] == "first" and calls.count("first") == 1  # even with no warm-up asked for


def test_small_budgets_take_small_blocks():
    """A small call within a 0.02 s budget: blocks sized so that twice min_samples fit the budget
    (torch's blocked_autorange sized them for 1e-4 overhead: 50 ms blocks for a 50 us call). A fake
    clock: a 50 us call whatever the machine is doing."""
    now = [0.0]

    def call():
        now[0] += 50e-6

    t = time_callable(call, "cpu", budget_s=0.02, min_samples=5, timer=lambda: now[0])
    assert len(t.samples_s) >= 5 and t.number_per_sample > 1
    assert t.number_per_sample * min(t.samples_s) < 0.02  # a block is a fraction of the budget


class FakeMachine:
    """A fake clock and run-queue wait: each call takes ``dt``; while ``busy`` says so, the call's
    threads also wait for a CPU, which makes it ``slow`` times longer."""

    def __init__(self, busy, dt=1e-3, slow=3.0):
        self.now, self.wait, self.calls, self.busy, self.dt, self.slow = 0.0, 0.0, 0, busy, dt, slow

    def call(self):
        self.calls += 1
        if self.busy(self.calls):
            self.now += self.slow * self.dt
            self.wait += (self.slow - 1) * self.dt
        else:
            self.now += self.dt


def test_samples_that_waited_for_a_cpu_are_kept_raw_but_left_out_of_the_statistics():
    """Calls 20-60 share their CPU: their blocks are contended, more blocks are timed until enough are
    clean, and the statistics are those of the clean ones, every raw sample kept."""
    m = FakeMachine(lambda n: 20 <= n < 60)
    t = time_callable(m.call, "cpu", budget_s=0.05, warmup=0, timer=lambda: m.now, waits=lambda: m.wait,
                      min_samples=5)
    assert any(t.contended) and not all(t.contended)
    assert t.median * t.number_per_sample == pytest.approx(t.number_per_sample * 1e-3)
    assert len(t.used) == t.contended.count(False) >= max(5, (len(t.samples_s) - 2) // 2)
    f = t.fields()
    assert f["time_n_samples"] == len(t.used) and len(f["time_samples_s"]) == len(t.samples_s)
    assert f["time_contended"] == t.contended and max(f["time_samples_s"]) > 2 * f["time_s_max"]
    assert all(w > CONTENDED * s for s, w, c in zip(t.samples_s, t.wait_samples_s, t.contended) if c)


def test_a_machine_busy_throughout_bounds_the_extra_blocks_and_keeps_every_sample():
    """Every call waits: no clean block exists, so the extra blocks stop at their bound (the normal
    timing's time twice again) and the statistics fall back to all the samples."""
    m = FakeMachine(lambda n: True)
    t = time_callable(m.call, "cpu", budget_s=0.05, warmup=0, timer=lambda: m.now, waits=lambda: m.wait,
                      min_samples=5)
    assert all(t.contended) and t.used == t.samples_s
    assert 0.05 * 3 <= sum(t.samples_s) * t.number_per_sample < 0.05 * 3 + 0.05


def test_a_quiet_machine_takes_no_extra_blocks_and_an_injected_clock_reads_no_waits():
    quiet = FakeMachine(lambda n: False)
    t = time_callable(quiet.call, "cpu", budget_s=0.05, warmup=0, timer=lambda: quiet.now, waits=lambda: quiet.wait)
    assert not any(t.contended) and sum(t.samples_s) * t.number_per_sample < 0.05 + 0.01
    fake = FakeMachine(lambda n: False)
    assert time_callable(fake.call, "cpu", budget_s=0.02, timer=lambda: fake.now).wait_samples_s is None


@pytest.mark.skipif(runqueue_wait_s() is None, reason="the kernel gives no per-thread schedstat (not Linux?)")
def test_the_wall_clock_reads_this_process_run_queue_wait():
    """On Linux the default timing reads the threads' run-queue wait beside every block: one
    non-negative wait per sample, far below the sample itself on average (a CI runner may be busy)."""
    x = torch.randn(64, 64)
    t = time_callable(lambda: x @ x, "cpu", budget_s=0.02, min_samples=5)
    assert t.wait_samples_s is not None and len(t.wait_samples_s) == len(t.samples_s)
    assert all(w >= 0 for w in t.wait_samples_s)


def test_the_calibration_is_timed_warm_after_every_block_and_read_beside_the_clean_samples():
    """``beside`` runs once after the warm-up, then twice after every kept block (the first call refills
    the caches, the second is timed), never inside a block; its median is of the calls next to the
    clean samples."""
    m = FakeMachine(lambda n: 20 <= n < 60)
    beside_at = []

    def beside():
        beside_at.append(m.calls)
        m.now += 1.0  # a second on the fake clock: inside a block it would swamp that block's sample

    t = time_callable(m.call, "cpu", budget_s=0.05, warmup=0, timer=lambda: m.now, waits=lambda: m.wait,
                      min_samples=5, beside=beside)
    assert len(t.beside_samples_s) == len(t.samples_s) and len(beside_at) == 2 * len(t.samples_s) + 1
    assert max(t.samples_s) < 1e-2  # no block held a call of it
    pairs = beside_at[1:]
    assert pairs[0::2] == pairs[1::2]  # the two calls after a block follow each other
    assert {b - a for a, b in zip(pairs[0::2], pairs[2::2])} == {t.number_per_sample}  # one block between
    # the calls beside a contended sample are left out of the median, as the sample is
    times = [1.0 if c else 2.0 for c in t.contended]
    t.beside_samples_s = times
    assert any(t.contended) and t.beside_median == 2.0
    assert t.fields()["time_calibration_samples_s"] == times
    assert time_callable(lambda: None, "cpu", budget_s=0.01).beside_median is None  # nothing beside


class SlowMachine:
    """A fake clock whose machine is slow (every call ``slow`` times longer, the calibration beside too)
    while ``slow_at`` says so of the calls made so far; the calibration takes ``cal`` when fast."""

    def __init__(self, slow_at, dt=1e-3, cal=1e-3, slow=2.0):
        self.now, self.calls, self.slow_at, self.dt, self.cal, self.slow = 0.0, 0, slow_at, dt, cal, slow

    def factor(self):
        return self.slow if self.slow_at(self.calls) else 1.0

    def call(self):
        self.calls += 1
        self.now += self.dt * self.factor()

    def beside(self):
        self.now += self.cal * self.factor()


def test_samples_timed_while_the_machine_was_slow_are_kept_raw_but_left_out_of_the_statistics():
    """Calls 10-40 run at half speed, the calibration beside them too: their samples are slow, more
    blocks are timed until enough fast ones exist, and the statistics and the calibration's median are
    those of the fast ones, every raw sample kept."""
    m = SlowMachine(lambda n: 10 <= n < 40)
    t = time_callable(m.call, "cpu", budget_s=0.05, warmup=0, timer=lambda: m.now, waits=None, min_samples=5,
                      beside=m.beside, slow_above=1.15e-3)
    assert any(t.slow) and not all(t.slow)
    assert t.median == pytest.approx(1e-3) and t.beside_median == pytest.approx(1e-3)
    assert len(t.used) == t.slow.count(False) >= 5
    f = t.fields()
    assert f["time_slow"] == t.slow and f["time_used"] == [not s for s in t.slow]
    assert max(f["time_samples_s"]) == pytest.approx(2e-3) and f["time_s_max"] < 2e-3


def test_host_busy_is_of_the_samples_used_not_of_the_moments_left_out():
    """Another process takes every core while the machine is slow (calls 10-40): those samples read a
    busy host and are left out, so the row's host busy is of the fast ones, which read a quiet one."""
    m = SlowMachine(lambda n: 10 <= n < 40)
    others = {"s": 0.0, "at": 0.0}

    def host():  # other processes' CPU seconds per core: all of it while slow, none otherwise
        others["s"] += (m.now - others["at"]) * (m.factor() > 1)
        others["at"] = m.now
        return others["s"]

    t = time_callable(m.call, "cpu", budget_s=0.05, warmup=0, timer=lambda: m.now, waits=None, min_samples=5,
                      beside=m.beside, slow_above=1.15e-3, host=host)
    assert t.host_busy == pytest.approx(0.0)
    assert [h > 0.5 for h in t.host_samples] == t.slow and any(t.slow)
    assert t.fields()["time_host_busy_samples"] == t.host_samples
    whole = sum(s * h for s, h in zip(t.samples_s, t.host_samples)) / sum(t.samples_s)
    assert whole > 0.2  # over every sample the host was busy: that is not the row's value


def test_a_machine_slow_throughout_bounds_the_extra_blocks_and_keeps_every_sample():
    """No fast sample: the extra blocks stop at their bound (``SLOW_EXTRA`` times the normal timing
    again), the statistics are of every sample, and the calibration's median says the machine was slow."""
    m = SlowMachine(lambda n: True)
    t = time_callable(m.call, "cpu", budget_s=0.05, warmup=0, timer=lambda: m.now, waits=None, min_samples=5,
                      beside=m.beside, slow_above=1.15e-3)
    assert all(t.slow) and t.used == t.samples_s and t.beside_median == pytest.approx(2e-3)
    spent = sum(t.samples_s) * t.number_per_sample
    assert 0.05 * (1 + SLOW_EXTRA) <= spent < 0.05 * (1 + SLOW_EXTRA) + 0.05


def test_without_a_slow_threshold_or_a_slow_sample_nothing_is_left_out_and_no_block_is_added():
    for slow_above in (None, 1.15e-3):
        m = SlowMachine(lambda n: False)
        t = time_callable(m.call, "cpu", budget_s=0.05, warmup=0, timer=lambda: m.now, waits=None, min_samples=5,
                          beside=m.beside, slow_above=slow_above)
        assert not any(t.slow) and t.used == t.samples_s and sum(t.samples_s) * t.number_per_sample < 0.05 + 0.01
        assert t.fields()["time_slow"] == (None if slow_above is None else t.slow)


def test_the_used_samples_are_the_clean_fast_ones_while_enough_exist_else_the_clean_ones():
    fast_enough = [False] * MIN_FAST
    assert used_mask([False, True, *fast_enough], [True, False, *fast_enough]) == [False, False, *[True] * MIN_FAST]
    few = [False] * (MIN_FAST - 1)
    assert used_mask([True, False, *few], [False, True, *[False] * len(few)]) == [False, True, *[True] * len(few)]
    assert used_mask([True, True], [False, True]) == [True, True]  # nothing clean: every sample


def test_a_row_calibration_is_the_median_of_the_kernel_timed_beside_its_samples():
    from harness.core.registry import get_variant

    case = Case("chunked", pattern="global", seq_len=64, heads=2, head_dim=16)
    rec = measure(get_variant("chunked"), case, budget_s=0.05, min_samples=5)
    samples = rec["time_calibration_samples_s"]
    assert len(samples) == len(rec["time_samples_s"]) and all(s > 0 for s in samples)
    clean = [s for s, c in zip(samples, rec["time_contended"]) if not c] or samples
    assert rec["calibration_s"] == pytest.approx(statistics.median(clean))


def test_a_short_call_is_timed_for_its_short_budget_and_a_long_one_for_the_whole():
    """``short`` (a call's seconds -> its budget): a 1 ms call (fake clock) given a shorter budget is
    timed for it, in blocks sized for it so that as many samples fit; a 10 ms call given more than the
    whole is timed for the whole budget; the budget each was given is a field of the row."""
    def timed(dt, short):
        m = FakeMachine(lambda n: False, dt=dt)
        return time_callable(m.call, "cpu", budget_s=0.8, warmup=0, timer=lambda: m.now, waits=None, min_samples=5,
                             short=short)

    def short(call_s):
        return 0.2 if call_s < 5e-3 else 1.6

    whole, split = timed(1e-3, None), timed(1e-3, short)
    assert whole.budget_s == 0.8 and split.budget_s == 0.2 and split.fields()["time_budget_s"] == 0.2
    for t, budget in ((whole, 0.8), (split, 0.2)):
        spent = sum(t.samples_s) * t.number_per_sample
        assert budget <= spent < budget * 1.2 and len(t.samples_s) >= 8  # as many blocks fit either budget
    assert split.number_per_sample < whole.number_per_sample
    long = timed(10e-3, short)
    assert long.budget_s == 0.8 and sum(long.samples_s) * long.number_per_sample >= 0.8
