"""Statistics and derived tables computed from loaded runs: numbers in, DataFrames out, no display."""
