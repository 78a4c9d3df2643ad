"""The case model beyond square multi-head attention: grouped-query heads, queries at the end of the
keys, packed documents; closed-form pairs and bytes; sweep axes; bad input as one line."""

import itertools

import pandas as pd
import pytest

from harness.cli.main import main
from harness.core.case import Case
from harness.core.errors import InputError
from harness.core.patterns import Pattern, make_doc_lens
from harness.render.roofline import plot_roofline, roofline_points
from harness.run.config import expand
from harness.run.validate import build_config


@pytest.mark.parametrize("kind,causal", list(itertools.product(["global", "local", "hierarchical", "document"],
                                                               [False, True])))
def test_closed_form_pairs_match_the_mask_for_every_query_and_key_length(kind, causal):
    for kv_len in (1, 2, 7, 64, 101):
        for q_len in sorted({1, 3, kv_len // 2 or 1, kv_len}):
            if q_len > kv_len:
                continue
            for w in (1, 5, 200):
                extra = {"local": {"window": w}, "hierarchical": {"segment": w}, "global": {},
                         "document": {"doc_lens": make_doc_lens(kv_len, min(w, kv_len))}}[kind]
                pattern = Pattern(kind, causal, **extra)
                assert pattern.pairs(q_len, kv_len) == int(pattern.mask(q_len, kv_len).sum()), (q_len, kv_len, w)


def test_queries_sit_at_the_end_of_the_keys():
    mask = Pattern("global", causal=True).mask(2, 5)
    assert mask.tolist() == [[True, True, True, True, False], [True] * 5]  # positions 3 and 4
    local = Pattern("local", causal=True, window=1).mask(1, 5)
    assert local.tolist() == [[False, False, False, True, True]]


def test_document_lengths_are_reproducible_and_cover_the_keys():
    lens = make_doc_lens(1000, 8)
    assert lens == make_doc_lens(1000, 8) and sum(lens) == 1000 and len(lens) == 8 and min(lens) >= 1
    assert len(set(lens)) > 1  # varied, as in packed batches
    assert make_doc_lens(5, 5) == (1, 1, 1, 1, 1)


def test_bytes_and_flops_of_a_decode_case():
    case = Case("naive", causal=True, heads=8, kv_heads=2, q_len=1, seq_len=16384, head_dim=128)
    assert case.bytes == (2 * 8 * 1 * 128 + 2 * 2 * 16384 * 128) * 4
    assert case.flops == 4 * 8 * 128 * 16384
    assert case.id == "naive/global-causal/cpu/float32/b1h8kv2n16384q1d128/fwd"
    assert Case("naive", heads=8, seq_len=64).id == "naive/global/cpu/float32/b1h8n64d64/fwd"  # square ids unchanged
    bwd = case.replace(pass_="fwd_bwd")
    assert bwd.bytes == case.bytes + (3 * 8 * 128 + 2 * 2 * 16384 * 128) * 4


def test_a_row_round_trips_through_its_record():
    case = Case("chunked", "document", True, heads=4, kv_heads=1, q_len=3, seq_len=50, head_dim=16,
                doc_lens=(10, 39, 1))
    assert Case.from_record(case.to_record()) == case
    old = {k: v for k, v in Case("naive", seq_len=64).to_record().items() if k not in ("kv_heads", "q_len", "doc_lens")}
    assert Case.from_record(old) == Case("naive", seq_len=64)  # a row of schema 1 or 2


@pytest.mark.parametrize("changes,needle", [
    ({"heads": 6, "kv_heads": 4}, "heads=6 is not divisible by kv_heads=4"),
    ({"q_len": 65, "seq_len": 64}, "q_len=65 is larger than kv_len=64"),
    ({"pattern": "document", "doc_lens": (10, 10)}, "doc_lens sum to 20, not kv_len=64"),
    ({"pattern": "document", "doc_lens": (64, 0)}, "doc_lens must be a non-empty list of integers >= 1"),
])
def test_bad_cases_are_one_line_errors(changes, needle):
    with pytest.raises(InputError, match=needle.replace("(", r"\(")):
        Case("naive", **{"seq_len": 64, **changes})


def test_sweep_axes_expand_into_decode_gqa_and_document_cases():
    config = build_config({"variants": ["naive"], "patterns": ["global", "document"], "causal": [True],
                           "heads": [8], "kv_heads": [2, 8], "q_lens": [1], "kv_lens": [64, 128], "docs": [3, 5]})
    cases = expand(config)
    assert len(cases) == 2 * 2 * (1 + 2)  # kv_heads x kv_lens x (global + two document counts)
    assert {c.q_len for c in cases} == {1} and {c.seq_len for c in cases} == {64, 128}
    assert {len(c.doc_lens) for c in cases if c.pattern == "document"} == {3, 5}
    assert len({c.id for c in cases}) == len(cases)


@pytest.mark.parametrize("args,needle", [
    (["--heads", "6", "--kv-heads", "4"], "heads=6 is not divisible by kv_heads=4"),
    (["--q-lens", "128", "--kv-lens", "64"], "q_len=128 is larger than kv_len=64"),
    (["--patterns", "document", "--docs", "100", "--seq-lens", "64"], "docs=100 is more documents than kv_len=64"),
    (["--kv-heads", "0"], "kv_heads must be integers >= 1"),
])
def test_bad_workload_flags_are_one_line_before_anything_runs(args, needle, capsys, tmp_path):
    code = main(["sweep", "--variants", "naive", *args, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_roofline_is_a_pure_function_of_the_table():
    rows = [{"status": "ok", "device": "cpu", "dtype": "float32", "variant": v, "pass": "fwd", "flops": f,
             "bytes": b, "time_s_median": t, "ceiling_flops_per_s": 2e11, "bandwidth_bytes_per_s": 1e10}
            for v, f, b, t in (("a", 1e6, 1e6, 1e-3), ("b", 1e9, 1e6, 1e-2))]
    rows.append({**rows[0], "status": "error", "time_s_median": None})
    pts = roofline_points(pd.DataFrame(rows))
    assert pts["intensity"].tolist() == [1.0, 1000.0] and pts["flops_per_s"].tolist() == [1e9, 1e11]
    fig = plot_roofline(pd.DataFrame(rows))
    assert fig.axes and fig.axes[0].get_xscale() == "log"
