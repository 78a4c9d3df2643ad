"""`attnbench ci`: markers, block order, verdicts on synthetic per-process values, and one real gate run."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import harness
from harness.cli.main import main
from harness.core.errors import InputError
from harness.gate.measure import accept_markers, resolve_ref
from harness.gate.verdict import (
    Measurements,
    accepted_by,
    block_order,
    judge,
    merge_recheck,
    parse_accept_markers,
)

ROOT = Path(harness.__file__).resolve().parent.parent
IDS = [f"naive/global/cpu/float32/b1h2n{n}d64/fwd" for n in (256, 1024)] + \
      [f"chunked/global/cpu/float32/b1h2n{n}d64/fwd" for n in (256, 1024)]


# ---- acceptance markers ------------------------------------------------------------------------
def test_parse_accept_markers():
    msg = "Speed up x\n\n[accept-regression: naive/global, chunked ]\nmore text [Accept-Regression:all]"
    assert parse_accept_markers(msg) == ["naive/global", "chunked", "all"]
    assert parse_accept_markers("no marker here [accept-regression]") == []
    assert parse_accept_markers("") == []


def test_accepted_by():
    assert accepted_by(IDS[0], ["chunked", "naive/global"]) == "naive/global"
    assert accepted_by(IDS[0], ["ALL"]) == "ALL"
    assert accepted_by(IDS[0], ["sdpa"]) is None and accepted_by(IDS[0], []) is None


def test_block_order_alternates():
    assert block_order(0) == ["base", "new", "new", "base"]
    assert block_order(1) == ["new", "base", "base", "new"]


# ---- verdicts on synthetic per-process values --------------------------------------------------
def fake(pairs=5, slow=None, noise=0.05, seed=0, machine_new=1.0, broken=(), absent_new=(), mem_new=1.0,
         error_new=1.0):
    """Measurements as measure_pairs would leave them: two blocks per side per case per pair, with
    per-process machine speed (seen by cases and calibration alike) and ~2% noise per figure; the
    first block of each case carries the calibration, the peak memory and the error."""
    rng = np.random.default_rng(seed)
    m = Measurements()
    for _ in range(pairs):
        blocks = {}
        for side in ("base", "new"):
            speed = (machine_new if side == "new" else 1.0) * (1 + noise * abs(rng.standard_normal()))
            blocks_by_case = {}
            for i, cid in enumerate(IDS):
                if side == "new" and cid in absent_new:
                    blocks_by_case[cid] = [{"status": "absent", "reason": "no variant"}] * 2
                    continue
                if side == "new" and cid in broken:
                    blocks_by_case[cid] = [{"status": "error", "reason": "RuntimeError: boom"}] * 2
                    continue
                factor = (slow or {}).get(cid, 1.0) if side == "new" else 1.0
                first = {"calibration_s": 2e-3 * speed * (1 + 0.02 * rng.standard_normal()),
                         "peak_mem_bytes": 2**22 * (i + 1) * (mem_new if side == "new" else 1.0),
                         "rel_error": 1e-7 * (error_new if side == "new" else 1.0)}
                blocks_by_case[cid] = [
                    {"status": "ok", "median_s": 1e-3 * (i + 1) * factor * speed * (1 + 0.02 * rng.standard_normal()),
                     **(first if j == 0 else {})}
                    for j in range(2)]
            blocks[side] = blocks_by_case
        m.add_pair(blocks)
    return m


def verdicts(frame):
    return dict(zip(frame["case_id"], frame["verdict"]))


def test_identical_code_is_same():
    for seed in range(10):
        assert set(verdicts(judge(IDS, fake(seed=seed), 1.10, 0.95)).values()) == {"same"}


def test_a_15x_slower_case_is_flagged_and_only_it():
    frame = judge(IDS, fake(slow={IDS[1]: 1.5}), 1.10, 0.95)
    v = verdicts(frame)
    assert v.pop(IDS[1]) == "slower" and set(v.values()) == {"same"}
    row = frame.set_index("case_id").loc[IDS[1]]
    assert 1.4 < row["time_ratio"] < 1.6 and row["time_ratio_lo"] > 1.10 and row["base_n_samples"] == 5


def test_a_uniformly_slower_machine_is_normalized_away():
    frame = judge(IDS, fake(machine_new=1.3), 1.10, 0.95)
    assert set(frame["verdict"]) == {"same"}
    assert frame["time_ratio_raw"].between(1.2, 1.45).all() and frame["time_ratio"].between(0.93, 1.07).all()


def test_accept_marker_turns_slower_into_accepted_without_touching_the_threshold():
    m = fake(slow={IDS[0]: 1.5, IDS[2]: 1.5})
    frame = judge(IDS, m, 1.10, 0.95, accept=["naive/global/cpu/float32/b1h2n256"])
    v = verdicts(frame)
    assert v[IDS[0]] == "accepted" and v[IDS[2]] == "slower"
    assert frame.set_index("case_id").loc[IDS[0], "time_ratio_lo"] > 1.10
    assert set(verdicts(judge(IDS, m, 1.10, 0.95, accept=["all"])).values()) == {"accepted", "same"}


def test_broken_and_absent_cases():
    frame = judge(IDS, fake(broken={IDS[3]}, absent_new={IDS[2]}), 1.10, 0.95)
    v = verdicts(frame)
    assert v[IDS[3]] == "broken" and v[IDS[2]] == "missing"
    assert frame.set_index("case_id").loc[IDS[3], "reason"] == "RuntimeError: boom"


def test_memory_and_error_verdicts_need_no_statistics():
    from harness.analysis.compare import summarize
    same = judge(IDS, fake(), 1.10, 0.95)
    assert set(same["mem_verdict"]) == {"same"} and set(same["error_verdict"]) == {"same"}
    more = judge(IDS, fake(mem_new=1.3), 1.10, 0.95)
    assert set(more["mem_verdict"]) == {"more"} and set(more["verdict"]) == {"same"}
    assert more["mem_ratio"].between(1.29, 1.31).all() and summarize(more)["exit_code"] == 1
    assert set(judge(IDS, fake(mem_new=1.3), 1.10, 0.95, accept=["all"])["mem_verdict"]) == {"more (accepted)"}
    worse = judge(IDS, fake(error_new=100), 1.10, 0.95)
    assert set(worse["error_verdict"]) == {"worse"} and summarize(worse)["exit_code"] == 1


def test_time_is_judged_on_per_pair_ratios():
    """Load that hits both processes of one pair cancels in the pair's ratio; one pair where only the
    new side was slowed 3x moves the median of five pairs little and raises no verdict."""
    m = fake(noise=0.0)
    cid = IDS[0]
    b, n = m.pairs_norm[cid][2]
    m.pairs_norm[cid][2] = (b, 3 * n)
    row = judge(IDS, m, 1.10, 0.95).set_index("case_id").loc[cid]
    assert row["verdict"] == "same" and 0.95 < row["time_ratio"] < 1.05 and row["base_n_samples"] == 5


def test_paired_ratio_ci():
    from harness.analysis.stats import paired_ratio_ci
    ci = paired_ratio_ci([1.0, 2.0, 4.0, 8.0], [1.5, 3.0, 6.0, 12.0])  # every pair 1.5x, machines 8x apart
    assert ci.ratio == pytest.approx(1.5) and ci.lo == pytest.approx(1.5) and ci.hi == pytest.approx(1.5)
    one = paired_ratio_ci([1.0], [2.0])
    assert one.ratio == 2.0 and np.isnan(one.lo)
    with pytest.raises(ValueError):
        paired_ratio_ci([1.0, 2.0], [1.0])


def test_recheck_is_judged_on_fresh_pairs_only():
    first = judge(IDS, fake(slow={IDS[1]: 1.5}), 1.10, 0.95)
    assert verdicts(first)[IDS[1]] == "slower"
    cleared = merge_recheck(first, judge([IDS[1]], fake(seed=3), 1.10, 0.95))
    row = cleared.set_index("case_id").loc[IDS[1]]
    assert row["verdict"] == "same" and "first round 1." in row["reason"] and "fresh pairs" in row["reason"]
    assert list(cleared["case_id"]) == IDS and verdicts(cleared)[IDS[0]] == "same"
    confirmed = merge_recheck(first, judge([IDS[1]], fake(pairs=8, seed=4, slow={IDS[1]: 1.5}), 1.10, 0.95))
    row = confirmed.set_index("case_id").loc[IDS[1]]
    assert row["verdict"] == "slower" and row["base_n_samples"] == 8


# ---- git plumbing ------------------------------------------------------------------------------
def _git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A throwaway git repository holding a copy of this checkout's harness/ and variants/."""
    if shutil.which("git") is None:
        pytest.skip("needs git on PATH")
    path = tmp_path_factory.mktemp("repo")
    for name in ("harness", "variants"):
        shutil.copytree(ROOT / name, path / name, ignore=shutil.ignore_patterns("__pycache__"))
    _git(path, "init", "-q")
    _git(path, "add", ".")
    _git(path, "commit", "-q", "-m", "first")
    (path / "variants" / "README.txt").write_text("x")
    _git(path, "add", ".")
    _git(path, "commit", "-q", "-m", "slow naive on purpose\n\n[accept-regression: naive]")
    return path


def test_markers_are_read_from_base_to_head(repo):
    assert accept_markers(repo, resolve_ref(repo, "HEAD~1")) == ["naive"]
    assert accept_markers(repo, resolve_ref(repo, "HEAD")) == ["naive"]  # empty range: HEAD's own message


def test_bad_ref_exits_2(repo, capsys):
    assert main(["ci", "no-such-ref", "--tree", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "BASE_REF 'no-such-ref' is not a commit" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(InputError):
        resolve_ref(repo, "HEAD~5")


def test_not_a_git_checkout_exits_2(tmp_path, capsys):
    assert main(["ci", "HEAD", "--tree", str(tmp_path)]) == 2
    assert "not inside a git checkout" in capsys.readouterr().err


def test_end_to_end_on_a_tiny_preset(repo, tmp_path, capsys, monkeypatch):
    """Two real process pairs on one tiny case: the base side imports the worktree, the new side the repo."""
    config = tmp_path / "tiny.toml"
    config.write_text('device = "cpu"\nvariants = ["naive"]\nseq_lens = [64]\nheads = [1]\nhead_dims = [16]\n'
                      'passes = ["fwd"]\nbudget_s = 0.005\ntimeout_s = 60\n')
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out_json = tmp_path / "ci.json"
    # A huge threshold: this test checks the plumbing, not the statistics (tested above on fixtures).
    code = main(["ci", "HEAD~1", "--tree", str(repo), "--config", str(config), "--processes", "2",
                 "--recheck-processes", "0", "--threshold", "5", "--json", str(out_json)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "### attnbench ci: no regression" in captured.out
    assert "naive/global/cpu/float32/b1h1n64d16/fwd" in captured.out
    imported = [line for line in captured.err.splitlines() if "the worker imported harness from" in line]
    assert len(imported) == 2
    base_line = next(line for line in imported if line.strip().startswith("base:"))
    new_line = next(line for line in imported if line.strip().startswith("new:"))
    assert "attnbench-ci-" in base_line and f"{repo}/harness" in new_line
    assert summary.read_text().startswith("### attnbench ci: no regression")
    data = json.loads(out_json.read_text())
    assert data["exit_code"] == 0 and data["cases"][0]["verdict"] == "same"
    assert data["cases"][0]["base_n_samples"] == 2
    assert "naive" in data["accept_markers"]
    assert _git(repo, "worktree", "list").count("\n") == 0  # the temporary worktree is gone


PRE_ENGINE_COMMIT = "e4d6331"  # the last commit with the flat layout (harness/case.py, harness/measure.py)


def test_gate_measures_a_tree_from_before_the_engine(tmp_path, capsys):
    """The gate's worker (this tree's file, run by path) also times a base tree of the old layout."""
    if shutil.which("git") is None:
        pytest.skip("needs git on PATH")
    probe = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{PRE_ENGINE_COMMIT}^{{commit}}"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"commit {PRE_ENGINE_COMMIT} is not in this clone (shallow?)")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PRE_ENGINE_COMMIT, "harness", "variants"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(repo)], input=archive, check=True)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "old layout")
    for name in ("harness", "variants"):
        shutil.rmtree(repo / name)
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "engine")
    config = tmp_path / "tiny.toml"
    config.write_text('device = "cpu"\nvariants = ["naive"]\nseq_lens = [64]\nheads = [1]\nhead_dims = [16]\n'
                      'passes = ["fwd"]\nbudget_s = 0.005\ntimeout_s = 60\n')
    code = main(["ci", "HEAD~1", "--tree", str(repo), "--config", str(config), "--processes", "2",
                 "--recheck-processes", "0", "--threshold", "5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "naive/global/cpu/float32/b1h1n64d16/fwd" in captured.out and "| same" in captured.out.replace("`", "")
