"""Rounds (--rounds): every cell measured again after all were measured once, its samples pooled."""

import json

import pytest

from harness.analysis.rounds import merge_round, rounds_done
from harness.analysis.trust import assess, cross_suspects
from harness.core.case import Case
from harness.core.errors import InputError
from harness.run.config import build_config
from harness.store.load import load_run


def measured(median, n=10, **changes):
    samples = [median] * n
    row = {"status": "ok", "time_s_median": median, "time_s_iqr": 0.0, "time_s_min": median, "time_s_max": median,
           "time_n_samples": n, "time_number_per_sample": 4, "time_noisy": False, "time_samples_s": samples,
           "time_cpu_samples_s": [2 * s for s in samples], "calibration_s": 1e-3, "host_busy": 0.0, "attempts": 1,
           "flops_per_s": 1e9, "ceiling_fraction": 0.5, "bytes_per_s": None, "bandwidth_fraction": None,
           "peak_mem_bytes": 4096, "rel_error": 1e-7}
    return {**row, **changes}


def test_a_round_pools_samples_and_keeps_each_rounds_median():
    first = {**measured(1e-3), "run_id": "r", "case_id": "c", "wall_s": 1.0, "finished_at": 5.0}
    two = merge_round(first, measured(1e-3, time_number_per_sample=2, calibration_s=1.5e-3))
    assert "run_id" not in two and "finished_at" not in two  # the new row gets its own
    assert two["time_rounds_s"] == [1e-3, 1e-3] and rounds_done(two) == 2 and rounds_done(first) == 1
    assert two["time_n_samples"] == 20 and len(two["time_cpu_samples_s"]) == 20
    assert two["time_number_per_sample"] == 2 and two["attempts"] == 2
    assert two["calibration_s"] == 1.5e-3  # the worst round's evidence
    three = merge_round(two, measured(4e-3, host_busy=0.4))  # a round twice as slow joins the pool
    assert three["time_rounds_s"] == [1e-3, 1e-3, 4e-3] and three["host_busy"] == 0.4
    assert three["time_s_median"] == 1e-3 and three["time_s_max"] == 4e-3
    assert three["time_noisy"] and three["time_s_iqr"] > 0.1 * three["time_s_median"]
    assert three["flops_per_s"] == pytest.approx(1e9) and three["peak_mem_bytes"] == 4096
    four = merge_round(three, measured(4e-3))  # now half the samples are slow: the median moves, rates follow
    assert four["time_s_median"] == pytest.approx(2.5e-3) and four["flops_per_s"] == pytest.approx(0.4e9)
    assert four["ceiling_fraction"] == pytest.approx(0.2)
    flags = json.loads(assess([four], {})[0]["time_flags"])
    assert any(f.startswith("noisy") for f in flags) and any(f.startswith("bimodal") for f in flags)


def test_a_failed_round_keeps_the_measurement_and_counts_its_attempt():
    two = merge_round(measured(1e-3), {"status": "error", "reason": "RuntimeError: boom", "attempts": 1})
    assert two["time_s_median"] == 1e-3 and two["attempts"] == 2 and rounds_done(two) == 1


def test_a_round_is_no_cross_cell_recheck():
    fwd = Case("naive", seq_len=64, heads=1, head_dim=8)
    bwd = fwd.replace(pass_="fwd_bwd")
    rows = [{**measured(9e-3), "case_id": fwd.id, **fwd.to_record(), "remeasured_for": "round 2"},
            {**measured(3e-3), "case_id": bwd.id, **bwd.to_record(), "remeasured_for": "round 2"}]
    assert cross_suspects(rows) == {0: "fwd slower than its own fwd_bwd"}
    rows[0]["remeasured_for"] = "fwd slower than its own fwd_bwd"
    assert cross_suspects(rows) == {}


def small(**changes):
    return build_config({"variants": ["naive", "sdpa_flash"], "seq_lens": [16, 32], "heads": [1], "head_dims": [8],
                         "budget_s": 0.005, "retries": 0, **changes})


def test_a_sweep_in_rounds_and_a_resume_that_adds_one(tmp_path):
    from harness.cli.show import trust_line
    from harness.run.sweep import run_sweep

    run = run_sweep(small(rounds=2), out=tmp_path / "run", quiet=True)
    df, meta = load_run(run)
    assert len(df) == 4 and df["case_id"].is_unique
    assert df["time_rounds_s"].map(len).tolist() == [2] * 4
    assert df["remeasured_for"].tolist() == ["round 2"] * 4 and meta["sweep"]["rounds"] == 2
    assert (df["time_n_samples"] >= 10).all() and (df["attempts"] == 2).all()
    assert meta["trust"]["rounds"]["cells"] == 4 and 0 <= meta["trust"]["rounds"]["agree"] <= 4
    assert "4 cells measured in rounds agree across them within 15%" in trust_line(meta["trust"])
    lines = (run / "journal.jsonl").read_text().splitlines()
    assert len(lines) == 8  # every round journaled as it finished: Ctrl-C keeps the rounds done
    # A resume with more rounds measures every cell once more, and nothing else.
    run_sweep(None, resume=run, quiet=True, options={"rounds": 3})
    df, meta = load_run(run)
    assert len(df) == 4 and df["time_rounds_s"].map(len).tolist() == [3] * 4
    assert len((run / "journal.jsonl").read_text().splitlines()) == 12 and meta["sweep"]["rounds"] == 3


def test_rounds_with_ray_is_refused_before_anything_runs(tmp_path):
    from harness.run.sweep import run_sweep

    with pytest.raises(InputError, match="--rounds 2 applies to the local executor only"):
        run_sweep(small(rounds=2), out=tmp_path / "run", quiet=True, executor="ray")
    assert not (tmp_path / "run").exists()
