"""Statistics computed from loaded runs, in base units (seconds, bytes, ratios): trust flags, rounds,
scaling, comparisons. Numbers in, DataFrames out; display columns and sentences are ``harness.render``'s."""
