"""A case that cannot fit in memory is an oom row at once, not attempted, and its reason gives the
figures."""

from __future__ import annotations

from harness.core.case import Case
from harness.run import executors, footprint
from harness.store.load import load_run


def test_a_case_beyond_memory_is_an_oom_row_at_once(cli, tmp_path, monkeypatch):
    attempted = []
    monkeypatch.setattr(executors, "measure", lambda variant, case, *a, **k: attempted.append(case.id))
    rc, _, err = cli("sweep", "--variants", "naive", "--patterns", "local", "--seq-lens", "1000000000",
                     "--heads", "1", "--head-dims", "16", "--budget-s", "0.01", "--out", tmp_path / "x", "--quiet")
    assert rc == 0 and "Traceback" not in err
    assert attempted == []  # refused before anything is allocated or timed
    df, _ = load_run(tmp_path / "x")
    assert len(df) > 0 and (df["status"] == "oom").all()
    reason = df["reason"].iloc[0]
    assert "not attempted" in reason and "bytes" in reason and "GiB" in reason and "available on cpu" in reason


def test_memory_shortfall_figures(monkeypatch):
    case = Case("naive", heads=2, seq_len=1024, head_dim=64, pass_="fwd_bwd")
    assert footprint.footprint_bytes(case) == 8 * 2 * 1024 * 64 * 4
    monkeypatch.setattr(footprint, "available_bytes", lambda device: 1000)
    reason = footprint.memory_shortfall(case)
    assert f"{8 * 2 * 1024 * 64 * 4} bytes" in reason and "1000 bytes" in reason and "gradients" in reason
    monkeypatch.setattr(footprint, "available_bytes", lambda device: 1 << 40)
    assert footprint.memory_shortfall(case) is None
