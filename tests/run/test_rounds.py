"""A sweep in rounds (--rounds): every cell measured again after all were measured once, each round
journaled, and a resume that adds a round."""

import pytest

from harness.core.errors import InputError
from harness.run.validate import build_config
from harness.store.load import load_run


def small(**changes):
    return build_config({"variants": ["naive", "sdpa_flash"], "seq_lens": [16, 32], "heads": [1], "head_dims": [8],
                         "budget_s": 0.005, "retries": 0, "ceiling_retries": 0, "recheck_retries": 0,
                         **changes})


def test_a_sweep_in_rounds_and_a_resume_that_adds_one(tmp_path, fake_measure):
    """The rounds' logic on clean measurements (faked): nothing else re-measures (no short rounds either),
    so the counts are exact."""
    from harness.cli.show import trust_line
    from harness.run.sweep import run_sweep

    run = run_sweep(small(rounds=2, short_rounds=1), out=tmp_path / "run", quiet=True)
    df, meta = load_run(run)
    ids = df["case_id"].tolist()
    assert len(df) == 4 and df["case_id"].is_unique and fake_measure == ids + ids  # round 2 after all of round 1
    assert df["time_rounds_s"].map(len).tolist() == [2] * 4
    assert df["remeasured_for"].tolist() == ["round 2"] * 4 and meta["sweep"]["rounds"] == 2
    assert (df["time_s_median"] == df["time_rounds_s"].map(min)).all() and (df["attempts"] == 2).all()
    assert meta["trust"]["rounds"] == {**meta["trust"]["rounds"], "cells": 4, "agree": 4}
    assert ("4 cells measured more than once (rounds, re-checks) had their kept round reproduced within 15%"
            in trust_line(meta["trust"]))
    lines = (run / "journal.jsonl").read_text().splitlines()
    assert len(lines) == 8  # every round journaled as it finished: Ctrl-C keeps the rounds done
    # A resume with more rounds measures every cell once more, and nothing else.
    run_sweep(None, resume=run, quiet=True, options={"rounds": 3})
    df, meta = load_run(run)
    assert len(df) == 4 and df["time_rounds_s"].map(len).tolist() == [3] * 4 and fake_measure[8:] == ids
    assert len((run / "journal.jsonl").read_text().splitlines()) == 12 and meta["sweep"]["rounds"] == 3


def test_a_timed_sweep_in_rounds_keeps_a_round_per_cell_whatever_the_load(tmp_path):
    """Real timing: a busy machine may add rounds (cross-cell checks, re-checks), so only what holds
    however many there were is asserted: at least the rounds asked for, one row per cell, the kept
    median one of the rounds and within 15% of the fastest, every measurement journaled."""
    from harness.run.sweep import run_sweep

    run = run_sweep(small(rounds=2, variants=["naive"]), out=tmp_path / "run", quiet=True)
    df, meta = load_run(run)
    rounds = df["time_rounds_s"].map(len)
    assert len(df) == 2 and df["case_id"].is_unique and (rounds >= 2).all() and meta["sweep"]["rounds"] == 2
    assert df["remeasured_for"].str.startswith("round ").all()
    kept_a_round = [m in r for m, r in zip(df["time_s_median"], df["time_rounds_s"])]
    assert all(kept_a_round) and (df["time_s_median"] <= 1.15 * df["time_rounds_s"].map(min)).all()
    assert (df["attempts"] >= rounds).all() and meta["trust"]["rounds"]["cells"] == 2
    assert 0 <= meta["trust"]["rounds"]["agree"] <= 2
    assert len((run / "journal.jsonl").read_text().splitlines()) >= rounds.sum()  # a row per round at least


def test_rounds_with_ray_is_refused_before_anything_runs(tmp_path):
    from harness.run.sweep import run_sweep

    with pytest.raises(InputError, match="--rounds 2 applies to the local executor only"):
        run_sweep(small(rounds=2), out=tmp_path / "run", quiet=True, executor="ray")
    assert not (tmp_path / "run").exists()


def test_short_cpu_calls_are_measured_in_more_rounds_by_default(tmp_path, fake_measure):
    """Faked cells: one of 2 ms (N=8) is measured in three rounds (--short-rounds 3, the default, for
    calls under SHORT_BELOW_S), one of 33 ms (N=32) in two (LONGER_ROUNDS, under ROUND_BELOW_S), one of
    131 ms (N=64) once; each later round after the whole pass before it; --short-rounds 1 measures each
    once."""
    from harness.analysis.rounds import LONGER_ROUNDS, ROUND_BELOW_S
    from harness.analysis.trust import SHORT_BELOW_S
    from harness.run.sweep import run_sweep

    axes = {"variants": ["naive"], "seq_lens": [8, 32, 64], "head_dims": [8], "passes": ["fwd"]}
    run = run_sweep(small(**axes), out=tmp_path / "run", quiet=True)
    df, meta = load_run(run)
    short, longer, long = df["case_id"].tolist()
    medians = df["time_s_median"].tolist()
    assert medians[0] < SHORT_BELOW_S < medians[1] < ROUND_BELOW_S < medians[2] and LONGER_ROUNDS == 2
    assert fake_measure == [short, longer, long, short, longer, short] and meta["sweep"]["short_rounds"] == 3
    assert df["remeasured_for"].fillna("").tolist() == ["round 3", "round 2", ""]
    assert [len(r) if r is not None else 1 for r in df["time_rounds_s"].tolist()] == [3, 2, 1]
    fake_measure.clear()
    run_sweep(small(**axes, short_rounds=1), out=tmp_path / "once", quiet=True)
    assert fake_measure == [short, longer, long]
