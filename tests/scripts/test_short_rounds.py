"""scripts/short_rounds.py's verdict: half-budget rounds of a short call must agree about as often as
whole-budget ones, and cost less."""

import pytest


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("short_rounds")


def test_consecutive_rounds_are_paired_and_agree_within_15_percent(script):
    assert script.agree([1.0, 1.1, 1.0, 1.2, 1.0]) == (1, 2)  # 1.2x disagrees; an odd last round is unpaired


def test_met_within_the_slack_and_missed_beyond_it_or_when_no_cheaper(script):
    assert script.missed({"half": 0.80, "whole": 0.85}, 0.55) == []
    (miss,) = script.missed({"half": 0.60, "whole": 0.85}, 0.55)
    assert "60%" in miss and "85%" in miss
    (miss,) = script.missed({"half": 0.85, "whole": 0.85}, 0.9)
    assert "0.90x" in miss
