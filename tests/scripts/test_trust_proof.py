"""The trust proof's verdict (scripts/trust_proof.py): it judges the loaded run's trusted cells against
the quiet medians their own run trusted, and misses the target when it should."""

from types import SimpleNamespace

import pytest


@pytest.fixture(scope="module")
def proof(load_script):
    return load_script("trust_proof")


def runs(quiet, loaded, quiet2):
    """Cells as the script loads them, from {cell: (median, trusted)}."""
    return [{c: {"time_s_median": m, "time_trusted": t} for c, (m, t) in run.items()} for run in (quiet, loaded, quiet2)]


ARGS = SimpleNamespace(threads=None, rounds=1, short_rounds=None, quiet_runs=2)
QUIET = {f"c{i}": (1.0, True) for i in range(10)}


def verdict(proof, tmp_path, quiet, loaded, quiet2, loaded_s=20.0):
    q, l, q2 = runs(quiet, loaded, quiet2)
    return proof.judge_runs(tmp_path, ARGS, [10.0, 12.0], q, loaded_s, l, q2)


def test_met_when_every_trusted_cell_is_near_its_quiet_value(proof, tmp_path):
    assert verdict(proof, tmp_path, QUIET, {c: (1.1, True) for c in QUIET}, QUIET) == 0


def test_missed_by_one_trusted_cell_off_by_more_than_25_percent(proof, tmp_path, capsys):
    loaded = {**{c: (1.0, True) for c in QUIET}, "c0": (1.3, True)}
    assert verdict(proof, tmp_path, QUIET, loaded, QUIET) == 1
    assert "1 trusted cells off by more than 25%" in capsys.readouterr().err
    flagged = {**loaded, "c0": (1.3, False)}  # flagged in the loaded run: honest, not off
    assert verdict(proof, tmp_path, QUIET, flagged, QUIET) == 0


def test_the_reference_is_the_quiet_values_their_run_trusted(proof, tmp_path):
    """c0's second quiet run was flagged (2.0, untrusted): its reference is the first run's 1.0 alone, so
    a loaded 1.0 is within 15%; against the mean of both (1.5) it would be off by a third."""
    quiet2 = {**QUIET, "c0": (2.0, False)}
    assert verdict(proof, tmp_path, QUIET, {c: (1.0, True) for c in QUIET}, quiet2) == 0
    assert verdict(proof, tmp_path, QUIET, {**{c: (1.0, True) for c in QUIET}, "c0": (1.5, True)}, quiet2) == 1


def test_missed_when_too_few_cells_are_trusted_or_the_run_too_slow(proof, tmp_path, capsys):
    assert verdict(proof, tmp_path, QUIET, {c: (1.0, c in ("c0", "c1")) for c in QUIET}, QUIET) == 1
    assert "2 of 10 cells trusted and within 15%" in capsys.readouterr().err
    assert verdict(proof, tmp_path, QUIET, {c: (1.0, True) for c in QUIET}, QUIET, loaded_s=26.0) == 1
    assert "2.6x the quiet run's wall time" in capsys.readouterr().err
    unsure = {c: (1.0, c in ("c0", "c1", "c2")) for c in QUIET}  # the quiet runs trusted 3 of 10 cells
    assert verdict(proof, tmp_path, unsure, {c: (1.0, True) for c in QUIET}, unsure) == 1
    assert "3 of 10 cells trusted and within 15%" in capsys.readouterr().err  # no reference: not within


def test_a_cell_missing_from_the_loaded_run_counts_against_it_and_nothing_is_not_met(proof, tmp_path, capsys):
    loaded = {c: (1.0, True) for c in list(QUIET)[:7]}  # 3 cells failed under load
    assert verdict(proof, tmp_path, QUIET, loaded, QUIET) == 1
    assert "7 of 10 cells trusted and within 15%" in capsys.readouterr().err
    assert verdict(proof, tmp_path, {}, {}, {}) == 1
    assert "0 of 0 cells" in capsys.readouterr().err


def test_every_miss_is_said(proof, tmp_path, capsys):
    loaded = {**{c: (1.0, c != "c1") for c in QUIET}, "c0": (1.5, True), "c2": (1.0, False)}
    assert verdict(proof, tmp_path, QUIET, loaded, QUIET, loaded_s=30.0) == 1
    err = capsys.readouterr().err
    assert "1 trusted cells off by more than 25%" in err and "7 of 10 cells trusted and within 15%" in err
    assert "3.0x the quiet run's wall time" in err


def test_it_says_how_often_each_run_met_the_state_that_slows_short_calls(proof, tmp_path, capsys):
    q, l, q2 = runs(QUIET, QUIET, QUIET)
    for i, cell in enumerate(q.values()):  # the first quiet run in that state for 4 of its 10 cells
        cell["sync_s"] = 1.5e-4 if i < 4 else 1e-4
    proof.judge_runs(tmp_path, ARGS, [10.0, 12.0], q, 20.0, l, q2)
    out = capsys.readouterr().out
    assert "quiet run: its threads' sync probe read 1.00x its best at the median, over 1.15x in 4 of 10 cells" in out
    assert "loaded run: its threads' sync probe" not in out  # no probe in that run: nothing said
