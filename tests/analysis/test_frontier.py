"""Quality versus cost on hand-made frames: the Pareto frontier (dominated points, ties, missing
values, one problem never dominating another), the cost of a configuration (fastest trusted ok
variant; wrong rows never count; untrusted only where nothing is trusted, and flagged), and the
cheapest configuration within each error threshold (NA when none meets it; the worst layer judges
"all layers"). Nothing is measured."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.analysis.frontier import cheapest_within, configurations, has_fidelity, over_layers, pareto


def cell(variant, pattern="local", *, time_s=1e-3, mem=1000, err=None, status="ok", trusted=True, inputs="random",
         layer=None, n=1024, causal=False, mass=None, **params):
    ok = status in ("ok", "wrong")
    return {"run_id": "r", "variant": variant, "pattern": pattern, "causal": causal, "device": "cpu",
            "dtype": "float32", "batch": 1, "heads": 4, "head_dim": 64, "seq_len": n, "q_len": n, "pass": "fwd",
            "status": status, "time_s_median": time_s if ok else None, "peak_mem_bytes": mem if ok else None,
            "time_trusted": trusted if status == "ok" else None, "inputs": inputs, "inputs_layer": layer,
            "fidelity_out_rel_error": err, "fidelity_mass_dropped": (err / 2 if err is not None else None)
            if mass is None else mass, **params}


def by_config(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(key=[f"{p}/{w}" for p, w in zip(frame["pattern"], frame["window"])]).set_index("key")


# ---- pareto -----------------------------------------------------------------------------------
def test_pareto_keeps_what_nothing_dominates_and_both_of_a_tie():
    pts = pd.DataFrame({"time_s_median": [1.0, 2.0, 3.0, 2.0, 1.0, 2.0, math.nan, 4.0, 3.0],
                        "fidelity_out_rel_error": [0.5, 0.2, 0.3, 0.2, 0.5, 0.25, 0.01, 0.0, math.nan]},
                       index=list("ABCDEFGHI"))
    got = pareto(pts)
    assert got.dtype == bool and list(got.index) == list(pts.index)
    # C (3, 0.3) is beaten by B on both; F (2, 0.25) has B's cost and more error; G has no cost, I no error
    assert got[got].index.tolist() == ["A", "B", "D", "E", "H"]


def test_pareto_compares_only_within_a_problem_unless_told_otherwise():
    pts = pd.DataFrame({"seq_len": [256, 256, 1024], "time_s_median": [1.0, 2.0, 5.0],
                        "fidelity_out_rel_error": [0.1, 0.2, 0.3]})
    assert pareto(pts).tolist() == [True, False, True]  # N=1024's point is alone in its problem
    assert pareto(pts, by=()).tolist() == [True, False, False]
    assert pareto(pts, cost="time_s_median", error="time_s_median", by=()).tolist() == [True, False, False]


# ---- configurations ---------------------------------------------------------------------------
def test_a_configuration_costs_its_fastest_trusted_ok_variant():
    rows = [cell("naive", "global", time_s=4e-3, mem=8000), cell("sdpa", "global", time_s=2e-3, mem=3000),
            cell("naive", window=128, time_s=3e-3, err=0.05),
            cell("local", window=128, time_s=5e-4, mem=900, err=0.04),
            cell("flex", window=128, time_s=1e-4, err=0.04, trusted=False),  # faster, untrusted
            cell("chunked", window=128, time_s=1e-5, err=0.001, status="wrong"),  # faster, wrong
            cell("local", window=512, time_s=1e-3, err=0.01, trusted=False),  # only untrusted: flagged
            cell("chunked", window=64, time_s=1e-5, err=0.0, status="wrong"),  # only wrong: no configuration
            cell("naive", window=32, status="oom")]
    got = by_config(configurations(pd.DataFrame(rows)))
    assert sorted(got.index) == ["global/<NA>", "local/128", "local/512"]
    assert got.loc["local/128", ["variant", "time_s_median", "peak_mem_bytes"]].tolist() == ["local", 5e-4, 900]
    assert got.loc["local/128", "time_trusted"] is True and got.loc["local/128", "n_variants"] == 3
    assert got.loc["local/128", "fidelity_out_rel_error"] == 0.04  # the chosen row's
    assert got.loc["local/512", "time_trusted"] is False and got.loc["local/512", "n_trusted"] == 0
    glob = got.loc["global/<NA>"]
    assert glob["variant"] == "sdpa" and glob["fidelity_out_rel_error"] == 0.0  # exact by definition
    assert glob["fidelity_mass_dropped"] == 0.0 and math.isnan(glob["fidelity_topk_out_rel_error"])
    assert got["sinks"].isna().all() and str(got["sinks"].dtype) == "Int64"  # absent columns read as NA


def test_old_frames_without_inputs_or_fidelity_read_as_random_and_have_no_fidelity():
    rows = [{k: v for k, v in cell("local", window=64).items() if not k.startswith(("inputs", "fidelity"))}]
    frame = pd.DataFrame(rows)
    assert not has_fidelity(frame) and not has_fidelity(pd.DataFrame(rows).assign(fidelity_out_rel_error=None))
    got = configurations(frame)
    assert got["inputs"].tolist() == ["random"] and got["inputs_layer"].isna().all()
    assert math.isnan(got["fidelity_out_rel_error"].iloc[0])
    assert configurations(frame.iloc[:0]).empty and cheapest_within(frame.iloc[:0]).empty


# ---- cheapest within --------------------------------------------------------------------------
def test_a_threshold_no_configuration_meets_is_na_never_a_stand_in():
    rows = [cell("local", window=128, time_s=5e-4, err=0.03), cell("local", window=512, time_s=1e-3, err=0.08)]
    got = cheapest_within(pd.DataFrame(rows)).set_index("threshold")
    assert got["met"].tolist() == [False, True, True]
    miss = got.loc[0.01]
    assert miss["pattern"] is None or pd.isna(miss["pattern"])
    assert all(pd.isna(miss[c]) for c in ("variant", "window", "time_s_median", "peak_mem_bytes",
                                          "fidelity_out_rel_error", "speedup"))
    assert got.loc[0.05, "window"] == 128 and got.loc[0.10, "window"] == 128
    assert math.isnan(got.loc[0.05, "speedup"])  # global did not run: no speedup either


def test_cheapest_within_picks_by_cost_with_its_speedup_over_global():
    rows = [cell("sdpa", "global", time_s=2e-3, mem=4000), cell("naive", "global", time_s=3e-3, mem=9000),
            cell("local", window=128, time_s=5e-4, mem=1000, err=0.04),
            cell("local", window=512, time_s=1e-3, mem=2000, err=0.008),
            cell("naive", "topk", time_s=2.5e-3, err=0.005, topk=64)]
    got = cheapest_within(pd.DataFrame(rows)).set_index("threshold")
    assert got.loc[0.01, "window"] == 512 and got.loc[0.01, "speedup"] == pytest.approx(2.0)
    assert got.loc[0.01, "memory_saving"] == pytest.approx(2.0)
    assert got.loc[0.05, "window"] == 128 and got.loc[0.05, "fidelity_mass_dropped"] == pytest.approx(0.02)
    assert got.loc[0.05, "global_time_s_median"] == 2e-3 and got["n_configurations"].tolist() == [4, 4, 4]
    by_mem = cheapest_within(pd.DataFrame(rows), thresholds=(0.001, 0.005), cost="peak_mem_bytes")
    assert by_mem["pattern"].tolist() == ["global", "topk"] and by_mem["topk"].tolist()[1] == 64
    assert pd.isna(by_mem["topk"].iloc[0]) and by_mem["speedup"].tolist()[0] == 1.0


def test_the_worst_layer_rules_all_layers():
    src = "smollm2:0123456789ab"
    rows = []
    for layer, (e64, e256) in enumerate([(0.005, 0.008), (0.03, 0.009)]):
        rows += [cell("sdpa", "global", time_s=4e-3, inputs=src, layer=layer),
                 cell("local", window=64, time_s=1e-3, err=e64, inputs=src, layer=layer),
                 cell("local", window=256, time_s=2e-3, err=e256, inputs=src, layer=layer)]
    rows.append(cell("local", window=32, time_s=1e-4, err=0.001, inputs=src, layer=0))  # not on every layer
    rows += [cell("sdpa", "global", time_s=4e-3), cell("local", window=64, time_s=1e-3, err=0.2)]
    got = cheapest_within(pd.DataFrame(rows))
    pick = {(r["inputs"], "all" if r["all_layers"] else r["inputs_layer"], r["threshold"]): r["window"]
            for r in got.to_dict("records")}
    assert pick[(src, 0, 0.01)] == 32 and pick[(src, 1, 0.01)] == 256
    assert pick[(src, "all", 0.01)] == 256 and pick[(src, "all", 0.05)] == 64
    random = got[got["inputs"] == "random"]
    assert random["pattern"].tolist() == ["global"] * 3 and not random["all_layers"].any()  # 20% error: never
    whole = got[got["all_layers"] & (got["threshold"] == 0.05)].iloc[0]
    assert whole["fidelity_out_rel_error"] == 0.03 and whole["n_layers"] == 2 and pd.isna(whole["inputs_layer"])
    assert whole["speedup"] == pytest.approx(4.0)
    layers = over_layers(configurations(pd.DataFrame(rows)))
    assert 32 not in set(layers.loc[layers["inputs"] == src, "window"].dropna())


def test_untrusted_costs_are_flagged_and_global_from_other_inputs_stands_in():
    src = "file:abcdefabcdef"
    rows = [cell("sdpa", "global", time_s=2e-3),  # global measured on random inputs only
            cell("local", window=128, time_s=5e-4, err=0.004, trusted=False, inputs=src, layer=3),
            cell("naive", window=128, time_s=9e-4, err=0.004, status="wrong", inputs=src, layer=3)]
    got = cheapest_within(pd.DataFrame(rows))
    row = got[(got["inputs"] == src) & ~got["all_layers"] & (got["threshold"] == 0.01)].iloc[0]
    assert row["variant"] == "local" and row["time_trusted"] is False
    assert row["speedup"] == pytest.approx(4.0) and row["n_configurations"] == 2
