"""How close to the float64 reference a variant must come: relative error bounds
||out - ref|| / ||ref|| per dtype, (forward, gradients). Held by `attnbench check` and by compare's
error verdicts. No imports: the CLI reads it at start-up."""

TOLERANCES = {"float32": (1e-5, 1e-4), "float64": (1e-10, 1e-9), "float16": (2e-2, 2e-2), "bfloat16": (2e-2, 2e-2)}
