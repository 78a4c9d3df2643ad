"""scripts/short_rounds.py's verdict: a short call's rounds on their share of the budget must agree about
as often as whole-budget ones, and all of them cost at most COST whole measurements."""

import pytest


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("short_rounds")


def test_consecutive_rounds_are_paired_and_agree_within_15_percent(script):
    assert script.agree([1.0, 1.1, 1.0, 1.2, 1.0]) == (1, 2)  # 1.2x disagrees; an odd last round is unpaired


def test_met_within_the_slack_and_missed_beyond_it_or_when_no_cheaper(script):
    assert script.missed({"share": 0.80, "whole": 0.85}, 0.45, 3) == []
    (miss,) = script.missed({"share": 0.60, "whole": 0.85}, 0.45, 3)
    assert "60%" in miss and "85%" in miss
    (miss,) = script.missed({"share": 0.85, "whole": 0.85}, 0.5, 3)
    assert "1.50x" in miss
    assert script.missed({"share": 0.85, "whole": 0.85}, 0.5, 2) == []  # two halves: 1.0x
