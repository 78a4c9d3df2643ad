"""`attnbench compare`: statistics, verdicts, exit status and rendering, on fixture runs written here."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from harness.analysis.compare import compare_runs, summarize
from harness.analysis.stats import median_ratio_ci, time_verdict
from harness.cli.main import main
from harness.core.case import Case
from harness.render.compare import (
    render_html,
    render_json,
    render_markdown,
    render_text,
)
from harness.store.journal import write_json
from harness.store.load import load_run, write_tables
from harness.store.schema import RUN_JSON, SCHEMA_VERSION

NOISE = 0.03
CASES = [Case(variant=v, pattern=p, window=16 if p == "local" else None, heads=2, seq_len=n, head_dim=16)
         for v in ("naive", "chunked") for p in ("global", "local") for n in (256, 512)]
BASE_TIMES = {c.id: 1e-3 * (i + 1) for i, c in enumerate(CASES)}


def write_run(path, seed, factors=None, machine=1.0, cases=CASES, times=None, statuses=None, n_samples=40):
    """A complete run folder: per-call samples with ~3% noise from a seeded RNG, start/end calibration."""
    rng = np.random.default_rng(seed)
    factors, times, statuses = factors or {}, times or BASE_TIMES, statuses or {}
    rows = []
    for case in cases:
        t = times.get(case.id, 1e-3) * machine * factors.get(case.id, 1.0)
        samples = (t * (1 + NOISE * rng.standard_normal(n_samples))).tolist()
        status = statuses.get(case.id, "ok")
        row = {"run_id": path.name, "case_id": case.id, **case.to_record(), "flops": case.flops, "status": status,
               "reason": "" if status == "ok" else "RuntimeError: boom"}
        if status == "ok":
            row.update(time_s_median=float(np.median(samples)), time_n_samples=n_samples, time_samples_s=samples,
                       peak_mem_bytes=1 << 20, peak_mem_method="fixture")
        rows.append(row)
    calibration = []
    for when in ("start", "end"):
        cal = (2e-4 * machine * (1 + NOISE * rng.standard_normal(30))).tolist()
        calibration.append({"when": when, "kernel": "matmul_f32_512", "time_s_median": float(np.median(cal)),
                            "samples_s": cal})
    path.mkdir(parents=True)
    write_tables(path, rows)
    write_json(path / RUN_JSON, {"schema_version": SCHEMA_VERSION, "run_id": path.name, "status": "complete",
                                 "provenance": {"device": "cpu"}, "sweep": {"device": "cpu"}, "calibration": calibration})
    return path


@pytest.fixture
def base(tmp_path):
    return write_run(tmp_path / "base", seed=1)


def run_cli(capsys, *args):
    code = main(["compare", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- statistics --------------------------------------------------------------------------------
def test_median_ratio_ci_is_seeded_and_covers_the_truth():
    rng = np.random.default_rng(0)
    b = 1.0 + 0.03 * rng.standard_normal(50)
    n = 1.5 * (1.0 + 0.03 * rng.standard_normal(50))
    ci = median_ratio_ci(b, n, seed=7)
    assert ci == median_ratio_ci(b, n, seed=7)
    assert ci.lo < 1.5 < ci.hi and ci.hi - ci.lo < 0.1
    assert time_verdict(ci, 1.10) == "slower"
    assert time_verdict(median_ratio_ci(n, b), 1.10) == "faster"
    assert time_verdict(median_ratio_ci(b, b[::-1]), 1.10) == "same"


def test_one_sample_gives_no_interval_and_no_confident_verdict():
    ci = median_ratio_ci([1.0], [2.0])
    assert ci.ratio == 2.0 and math.isnan(ci.lo) and time_verdict(ci, 1.1) == "same"
    with pytest.raises(ValueError):
        median_ratio_ci([1.0, 0.0], [1.0])


# ---- verdicts and exit status ------------------------------------------------------------------
def test_identical_runs_exit_0(base, capsys):
    code, out, err = run_cli(capsys, base, base)
    assert code == 0, err
    assert "8 cases compared (8 same)" in out
    assert "regression" not in err


def test_runs_measured_with_different_host_allocators_are_noted(base, tmp_path, capsys):
    new = write_run(tmp_path / "new", seed=1)
    meta = json.loads((new / RUN_JSON).read_text())
    (new / RUN_JSON).write_text(json.dumps({**meta, "allocator": {"allocator": "steady", "malloc": "glibc"}}))
    code, _, err = run_cli(capsys, base, new)
    assert code == 0 and "host allocators differ (base system, new steady" in err
    assert "allocators differ" not in run_cli(capsys, base, base)[2]


def test_same_code_new_noise_exits_0(base, tmp_path, capsys):
    new = write_run(tmp_path / "new", seed=2)
    code, out, _ = run_cli(capsys, base, new)
    assert code == 0
    assert "slower" not in out.split("\n", 1)[1]


def test_one_case_15x_slower_exits_1_and_is_named(base, tmp_path, capsys):
    slow = CASES[3].id
    new = write_run(tmp_path / "new", seed=2, factors={slow: 1.5})
    code, out, err = run_cli(capsys, base, new)
    assert code == 1
    assert f"regression: {slow}" in err
    result = compare_runs(*load_run(base), *load_run(new))
    verdicts = dict(zip(result["case_id"], result["verdict"]))
    assert verdicts.pop(slow) == "slower" and set(verdicts.values()) == {"same"}
    row = result.set_index("case_id").loc[slow]
    assert row["time_ratio_lo"] > 1.10 and 1.4 < row["time_ratio"] < 1.6


def test_faster_case_exits_0(base, tmp_path, capsys):
    new = write_run(tmp_path / "new", seed=2, factors={CASES[0].id: 0.6})
    code, out, _ = run_cli(capsys, base, new)
    assert code == 0 and "faster" in out


def test_uniformly_slower_machine_is_not_a_regression(base, tmp_path, capsys):
    new = write_run(tmp_path / "new", seed=2, machine=1.3)
    code, out, _ = run_cli(capsys, base, new)
    assert code == 0, out
    result = compare_runs(*load_run(base), *load_run(new))
    assert (result["verdict"] == "same").all()
    assert result["time_ratio_raw"].between(1.2, 1.4).all()  # the raw ratio is still shown
    assert result["time_ratio"].between(0.95, 1.05).all()
    assert re.search(r"new/base 1\.[23]\d\d", out)


def test_slower_threshold_is_respected(base, tmp_path):
    new = write_run(tmp_path / "new", seed=2, factors={CASES[0].id: 1.3})
    result = compare_runs(*load_run(base), *load_run(new), threshold=1.5)
    assert (result["verdict"] == "same").all()


def test_no_matching_case_exits_2(base, tmp_path, capsys):
    other = [c.replace(seq_len=64) for c in CASES]
    new = write_run(tmp_path / "new", seed=2, cases=other)
    code, out, err = run_cli(capsys, base, new)
    assert code == 2
    assert "no case is in both" in err and out == ""
    result = compare_runs(*load_run(base), *load_run(new))
    assert set(result["verdict"]) == {"new", "missing"}


def test_new_and_missing_cases_are_listed(base, tmp_path, capsys):
    extra = Case(variant="local", pattern="local", window=16, heads=2, seq_len=256, head_dim=16)
    new = write_run(tmp_path / "new", seed=2, cases=[*CASES[1:], extra])
    code, out, _ = run_cli(capsys, base, new)
    assert code == 0
    assert f"{extra.id}" in out and "new" in out and "missing" in out


def test_a_case_that_stopped_working_is_broken_and_fails(base, tmp_path, capsys):
    new = write_run(tmp_path / "new", seed=2, statuses={CASES[2].id: "error"})
    code, out, err = run_cli(capsys, base, new)
    assert code == 1
    assert "broken (ok -> error: RuntimeError: boom)" in out and CASES[2].id in err


@pytest.mark.parametrize("damage", ["no_folder", "no_run_json", "bad_json", "bad_parquet", "old_schema"])
def test_unreadable_run_exits_2(base, tmp_path, capsys, damage):
    bad = tmp_path / "bad"
    if damage != "no_folder":
        bad = write_run(bad, seed=3)
    if damage == "no_run_json":
        (bad / RUN_JSON).unlink()
    elif damage == "bad_json":
        (bad / RUN_JSON).write_text("{not json")
    elif damage == "bad_parquet":
        (bad / "results.parquet").write_bytes(b"PAR1 garbage")
    elif damage == "old_schema":
        meta = json.loads((bad / RUN_JSON).read_text())
        (bad / RUN_JSON).write_text(json.dumps({**meta, "schema_version": 0}))
    code, out, err = run_cli(capsys, base, bad)
    assert code == 2
    assert err.startswith("attnbench compare: error: NEW run") and len(err.strip().splitlines()) == 1


def test_bad_threshold_is_input_error(base, capsys):
    code, _, err = run_cli(capsys, base, base, "--threshold", "0.9")
    assert code == 2 and "threshold must be a ratio above 1" in err


def test_missing_calibration_falls_back_to_raw_ratio(base, tmp_path):
    new = write_run(tmp_path / "new", seed=2)
    meta = json.loads((new / RUN_JSON).read_text())
    meta["calibration"] = [{"when": "start", "error": "RuntimeError: no"}]
    (new / RUN_JSON).write_text(json.dumps(meta))
    result = compare_runs(*load_run(base), *load_run(new))
    assert (result["time_ratio"] == result["time_ratio_raw"]).all()
    assert "unavailable" in render_text(result)


# ---- rendering ---------------------------------------------------------------------------------
EVIL = "<script>alert(1)</script>"


def _evil_frames(tmp_path):
    evil = [Case(variant="naive", heads=2, seq_len=256, head_dim=16, params=(("tag", EVIL),))]
    times = {evil[0].id: 1e-3}
    base = write_run(tmp_path / "b", seed=1, cases=evil, times=times)
    new = write_run(tmp_path / "n", seed=2, cases=evil, times=times, factors={evil[0].id: 1.5})
    frame_b, meta_b = load_run(base)
    frame_n, meta_n = load_run(new)
    # The variant name itself, as a plug-in could register it.
    for frame in (frame_b, frame_n):
        frame["case_id"] = frame["case_id"].str.replace("naive/", f"{EVIL}/", regex=False)
    return compare_runs(frame_b, meta_b, frame_n, meta_n)


def test_html_escapes_names(tmp_path):
    result = _evil_frames(tmp_path)
    assert result["case_id"].str.contains(EVIL, regex=False).all()
    out = render_html(result, base_name=EVIL, new_name="new<b>")
    assert "<script" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "<b>" not in out
    assert out.startswith('<div class="attnbench-compare">') and out.rstrip().endswith("</div>")
    assert "<html" not in out and "src=" not in out and "href=" not in out  # a self-contained fragment
    assert 'class="slower"' in out


def test_markdown_and_json_render(tmp_path):
    result = _evil_frames(tmp_path)
    md = render_markdown(result)
    assert md.startswith("### attnbench compare: REGRESSION")
    assert "| case |" in md and "**slower**" in md
    data = json.loads(render_json(result))
    assert data["summary"]["exit_code"] == 1 and data["cases"][0]["verdict"] == "slower"
    assert data["cases"][0]["time_ratio"] > 1.1


def test_formats_from_the_cli(base, tmp_path, capsys):
    new = write_run(tmp_path / "new", seed=2, factors={CASES[1].id: 1.5})
    for fmt, marker in (("markdown", "### attnbench compare"), ("html", "<table>"), ("json", '"exit_code": 1')):
        code, out, _ = run_cli(capsys, base, new, "--format", fmt)
        assert code == 1 and marker in out


def test_summary_counts(base):
    df, meta = load_run(base)
    result = compare_runs(df, meta, df, meta)
    s = summarize(result)
    assert s["compared"] == len(CASES) and s["exit_code"] == 0 and s["failing"] == []
    assert isinstance(result, pd.DataFrame) and result.attrs["calibration_ratio"] == pytest.approx(1.0)


def test_machine_drift_during_a_run_widens_the_interval(base, tmp_path):
    """A run whose calibration moved 2x can't convict a 1.5x case; the same case with no drift is convicted."""
    slow = CASES[3].id
    new = write_run(tmp_path / "new", seed=2, factors={slow: 1.5})
    assert compare_runs(*load_run(base), *load_run(new)).set_index("case_id").loc[slow, "verdict"] == "slower"
    meta = json.loads((new / RUN_JSON).read_text())
    meta["calibration"][1]["time_s_median"] *= 2.0  # the machine halved its speed between start and end
    (new / RUN_JSON).write_text(json.dumps(meta))
    result = compare_runs(*load_run(base), *load_run(new))
    assert result.attrs["drift_factor"] > 1.9
    assert result.set_index("case_id").loc[slow, "verdict"] == "same"
    assert "widened" in render_text(result)
