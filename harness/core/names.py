"""Names every layer shares, in a module with no imports (the CLI and the report read them at start-up
without importing torch): the statuses a row can have, run.json's key for the bandwidth ceiling, and the
report's default baseline variant."""

STATUSES = ("ok", "wrong", "unsupported", "oom", "timeout", "error")  # wrong: ran, but not what its pattern defines
BANDWIDTH_KEY = "bandwidth_bytes_per_s"  # beside the per-dtype matmul ceilings in run.json's ceilings
DEFAULT_BASELINE = "naive"  # the variant speedups and memory savings are relative to, where a run has it
