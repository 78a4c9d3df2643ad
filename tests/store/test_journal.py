"""The journal and the loader survive damage and say so: a bad line is skipped with its file and line
number and every valid row is kept; a torn last line is cut off on repair; a damaged Parquet table is
rebuilt from the journal; rows of another run or outside the sweep are dropped with a count."""

import json
import logging
import shutil
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.core.errors import InputError
from harness.store.journal import InProgress, Journal
from harness.store.load import load_run

V1_RUN = Path(__file__).parent / "data" / "run_v1"  # 12 rows, a complete run with journal and Parquet


def _rows(n: int) -> list[dict]:
    return [{"run_id": "r", "case_id": f"c{i}", "status": "ok", "time_s_median": 0.1 * i} for i in range(n)]


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


BAD_LINES = ["garbage", '{"run_id": "r", "case_id": "c9", "sta', "5", "[]", "null", '"text"', '{"a": 1}',
             '{"run_id": "r", "case_id": "c9"}', '{"run_id": "r", "status": "ok"}', '{"run_id": "r", "case_id": 7, '
             '"status": "ok"}', "[" * 100_000]


@pytest.mark.parametrize("bad", BAD_LINES)
def test_a_bad_line_in_the_middle_is_skipped_by_number_and_every_valid_row_kept(tmp_path, caplog, bad):
    path = tmp_path / "journal.jsonl"
    rows = _rows(4)
    _write(path, [json.dumps(r) for r in rows[:2]] + [bad] + [json.dumps(r) for r in rows[2:]])
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING):
        assert Journal(path).read(repair=True) == rows
    (msg,) = _warnings(caplog)
    assert f"{path} line 3: skipped" in msg and "the other rows are kept" in msg
    assert path.read_bytes() == before  # only a torn *last* line is cut off


def test_bytes_that_are_not_utf8_are_a_bad_line(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    path.write_bytes(json.dumps(_rows(1)[0]).encode() + b"\n\xff\xfe\x00garbage\n" + json.dumps(_rows(2)[1]).encode()
                     + b"\n")
    with caplog.at_level(logging.WARNING):
        assert [r["case_id"] for r in Journal(path).read()] == ["c0", "c1"]
    assert "line 2: skipped, not JSON" in _warnings(caplog)[0]


def test_many_bad_lines_warn_ten_times_then_once(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    _write(path, ["junk"] * 25 + [json.dumps(_rows(1)[0])])
    with caplog.at_level(logging.WARNING):
        assert len(Journal(path).read()) == 1
    msgs = _warnings(caplog)
    assert len(msgs) == 11 and "15 more damaged lines skipped (25 in all)" in msgs[-1]


def test_a_torn_last_line_is_skipped_and_cut_off_on_repair(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    rows = _rows(3)
    good = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(good + '{"run_id": "r", "case_id": "c3", "status": "o')  # killed while writing
    with caplog.at_level(logging.WARNING):
        assert Journal(path).read() == rows
        assert path.read_text().startswith(good) and len(path.read_text()) > len(good)  # read alone changes nothing
        assert Journal(path).read(repair=True) == rows
    assert path.read_text() == good
    assert "line 4: skipped a torn last line" in _warnings(caplog)[0]
    assert "line 4: cut off a torn last line" in _warnings(caplog)[1]
    j = Journal(path)
    j.append(_rows(5)[4])
    j.close()
    assert [r["case_id"] for r in Journal(path).read()] == ["c0", "c1", "c2", "c4"]


def test_a_complete_last_row_without_its_newline_is_kept_and_the_next_row_starts_a_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    rows = _rows(3)
    path.write_text("\n".join(json.dumps(r) for r in rows[:2]))  # no final newline
    j = Journal(path)
    assert j.read() == rows[:2]
    j.append(rows[2])
    j.close()
    assert Journal(path).read() == rows and path.read_text().count("\n") == 3


def test_in_progress_marker(tmp_path):
    marker = InProgress(tmp_path)
    assert marker.get() is None
    marker.set("naive/global/cpu/float32/b1h1n16d8/fwd")
    assert marker.get() == "naive/global/cpu/float32/b1h1n16d8/fwd"
    marker.path.write_text("{torn")
    assert marker.get() is None  # too damaged to say: no claim
    marker.clear()
    marker.clear()  # clearing twice is fine
    assert not marker.path.exists()


# ---- load_run on damaged run folders ------------------------------------------------------------
@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(V1_RUN, run)
    return run


def _set_status(run: Path, status: str) -> None:
    meta = json.loads((run / "run.json").read_text())
    meta["status"] = status
    (run / "run.json").write_text(json.dumps(meta))


def test_load_run_and_show_keep_every_valid_row_around_a_garbage_line(run, caplog, capsys):
    _set_status(run, "running")  # an unfinished run: the journal is the table
    lines = (run / "journal.jsonl").read_text().splitlines()
    _write(run / "journal.jsonl", lines[:3] + ["garbage {", "[]"] + lines[3:])
    with caplog.at_level(logging.WARNING):
        df, _ = load_run(run)
    assert len(df) == 12 and df["case_id"].is_unique
    msgs = _warnings(caplog)
    assert any("journal.jsonl line 4: skipped, not JSON" in m for m in msgs)
    assert any("journal.jsonl line 5: skipped, a JSON array, not a row object" in m for m in msgs)
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "(running): 12 rows" in out and "\nallocator: system (not recorded" in out  # a run from before


@pytest.mark.parametrize("damage", [b"junk", b"PAR1" + b"\0" * 64 + b"PAR1", None])
def test_a_damaged_parquet_is_rebuilt_from_the_journal(run, caplog, damage):
    expected, _ = load_run(run)
    if damage is None:
        (run / "results.parquet").unlink()
    else:
        (run / "results.parquet").write_bytes(damage)
    with caplog.at_level(logging.WARNING):
        df, meta = load_run(run)
    assert meta["status"] == "complete" and len(df) == len(expected) == 12
    assert list(df["case_id"]) == list(expected["case_id"])
    assert df["time_s_median"].equals(expected["time_s_median"])
    (msg,) = _warnings(caplog)
    assert "results.parquet cannot be read" in msg and "rebuilt the table from" in msg and "journal.jsonl" in msg


def test_show_and_report_survive_a_damaged_parquet(run, tmp_path, capsys, caplog):
    (run / "results.parquet").write_bytes(b"not parquet")
    with caplog.at_level(logging.WARNING):
        assert main(["show", str(run), "--all"]) == 0
        assert "12 rows" in capsys.readouterr().out
        assert main(["report", str(run), "--reports-root", str(tmp_path / "reports")]) == 0
    assert (tmp_path / "reports" / "index.html").exists()
    assert any("rebuilt the table" in m for m in _warnings(caplog))


def test_a_damaged_parquet_without_a_journal_is_one_line(run):
    (run / "results.parquet").write_bytes(b"junk")
    (run / "journal.jsonl").unlink()
    with pytest.raises(InputError, match="cannot be read .* no journal.jsonl to rebuild it from; hint"):
        load_run(run)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"schema_version": 2}', "\xff"])
def test_a_damaged_run_json_is_one_line(run, capsys, text):
    (run / "run.json").write_text(text, encoding="latin-1")
    with pytest.raises(InputError, match="damaged"):
        load_run(run)
    assert main(["show", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "hint" in err.lower()


def test_rows_of_another_run_or_outside_the_sweep_are_dropped_with_a_count(run, caplog):
    _set_status(run, "running")
    lines = (run / "journal.jsonl").read_text().splitlines()
    other = [json.loads(x) for x in lines[:3]]
    for r in other:
        r["run_id"] = "another-run"
    outside = json.loads(lines[0])
    outside.update(seq_len=4096, case_id=outside["case_id"].replace("n32", "n4096"))
    repeated = json.loads(lines[1])
    _write(run / "journal.jsonl", lines + [json.dumps(r) for r in (*other, outside, repeated)])
    with caplog.at_level(logging.WARNING):
        df, _ = load_run(run)
    assert len(df) == 12 and df["case_id"].is_unique and set(df["run_id"]) == {"run_v1"}
    assert 4096 not in set(df["seq_len"])
    (msg,) = _warnings(caplog)
    assert "dropped 5 rows" in msg and "3 of another run" in msg and "1 of cases outside the run's sweep" in msg
    assert "1 repeating a case" in msg and "kept 12" in msg


def test_rows_whose_params_differ_from_the_sweep_are_outside_it(run, caplog):
    _set_status(run, "running")
    meta = json.loads((run / "run.json").read_text())
    meta["sweep"]["params"] = {"chunked": {"chunk_q": 999}}  # no stored row has it
    (run / "run.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        df, _ = load_run(run)
    assert "chunked" not in set(df["variant"]) and len(df) == 8
    assert "4 of cases outside the run's sweep" in _warnings(caplog)[0]


def test_an_intact_run_loads_without_warnings(run, caplog):
    with caplog.at_level(logging.WARNING):
        df, _ = load_run(run)
    assert len(df) == 12 and not _warnings(caplog)


def test_a_remeasured_row_supersedes_the_first_row_of_its_case(run, caplog):
    _set_status(run, "running")
    lines = (run / "journal.jsonl").read_text().splitlines()
    again = json.loads(lines[1])
    again.update(time_s_median=1.25e-3, remeasured_for="drop: 3.0x slower than at the next length N=64", attempts=2)
    _write(run / "journal.jsonl", lines + [json.dumps(again)])
    with caplog.at_level(logging.WARNING):
        df, _ = load_run(run)
    assert len(df) == 12 and df["case_id"].is_unique and not _warnings(caplog)
    row = df.set_index("case_id").loc[again["case_id"]]
    assert row["time_s_median"] == 1.25e-3 and row["remeasured_for"].startswith("drop") and row["attempts"] == 2
