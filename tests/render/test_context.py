"""Context the report gives beside a figure: on what the error was measured (the timed case or a
smaller twin)."""

from __future__ import annotations

import math

import pandas as pd


def test_twin_note_says_what_is_smaller():
    from harness.render.context import twin_note

    row = {"error_on_twin": True, "seq_len": 4096, "error_seq_len": 4096, "batch": 2, "error_batch": 1,
           "heads": 8, "error_heads": 2}
    assert twin_note(row) == "on a smaller twin (batch = 1 instead of 2, heads = 2 instead of 8)"
    assert twin_note({**row, "error_seq_len": 1024, "error_batch": 2}) == \
        "on a smaller twin (N = 1024 instead of 4096, heads = 2 instead of 8)"
    assert twin_note({**row, "error_on_twin": False}) == "on the timed case"
    assert twin_note({**row, "error_seq_len": pd.NA, "error_batch": None, "error_heads": math.nan}) == \
        "on a smaller twin"
