"""One budget for what a run spends to earn trust beyond measuring each cell once.

Re-measuring a cell its own evidence flags, the cross-cell re-measurements, the end-of-run re-check
and every wait for a quiet machine draw on one budget: ``fraction`` (``--trust-budget``; 0.5 by default,
None for unbounded) times the seconds the run spent measuring its cells the first time, so it grows
with the run. During the first pass, re-measurements may spend ``FIRST_PASS_SHARE`` of what it has
grown to; the rest is the end-of-run re-check's, which measures after the load has had time to pass.
While some is left they go on as before; once it is spent, no more is measured or waited for, the
cells still flagged stay flagged (honestly), and run.json's ``trust.budget`` says how much was spent
and how many re-measurements it refused. On a quiet machine little is flagged and the budget is
hardly touched; under a load that never lets up it bounds the run's wall time to about
(1 + fraction) times its first pass.
"""

from __future__ import annotations

import contextlib
import math
import time

TRUST_BUDGET_FRACTION = 0.5  # the default --trust-budget: half as long as the first pass (None: unbounded)
FIRST_PASS_SHARE = 0.5  # of the budget grown so far, what re-measurements during the first pass may spend: the
# rest is kept for the end-of-run re-check, which measures when the load has had time to pass


class TrustBudget:
    """``fraction`` x the first-pass measuring seconds (``add_base``) for re-measuring and waiting.

    ``clock`` is injectable (tests use a fake clock)."""

    def __init__(self, fraction: float | None = TRUST_BUDGET_FRACTION, clock=time.perf_counter) -> None:
        self.fraction, self.clock = (math.inf if fraction is None else fraction), clock
        self.base_s = self.spent_s = 0.0
        self.refused = 0
        self.first_pass = True  # the run is measuring its cells the first time (the sweep ends it)

    def add_base(self, seconds: float) -> None:
        """A first measurement of a cell took ``seconds``: the budget grows by ``fraction`` of it (only
        during the first pass: measuring a cell again never grows it)."""
        if self.first_pass:
            self.base_s += max(0.0, seconds)

    @classmethod
    def unlimited(cls) -> "TrustBudget":
        """A budget that never refuses (callers that measure again on their own terms)."""
        return cls(math.inf)

    @property
    def allowed_s(self) -> float:
        return math.inf if math.isinf(self.fraction) else self.fraction * self.base_s

    def left_s(self) -> float:
        """What may still be spent now: during the first pass, ``FIRST_PASS_SHARE`` of the budget so far."""
        return self.allowed_s * (FIRST_PASS_SHARE if self.first_pass else 1.0) - self.spent_s

    def allows(self) -> bool:
        """Whether one more re-measurement (or wait) may start; a refusal is counted."""
        if self.left_s() > 0:
            return True
        self.refused += 1
        return False

    @contextlib.contextmanager
    def first_measurement(self):
        """Time a cell's first measurement and grow the budget by it (``add_base``)."""
        t0 = self.clock()
        try:
            yield
        finally:
            self.add_base(self.clock() - t0)

    @contextlib.contextmanager
    def spend(self):
        """Charge the time spent inside to the budget (Ctrl-C too)."""
        t0 = self.clock()
        try:
            yield
        finally:
            self.spent_s += self.clock() - t0

    def summary(self) -> dict:
        """JSON-ready: run.json's ``trust.budget``."""
        return {"fraction": None if math.isinf(self.fraction) else self.fraction, "first_pass_s": round(self.base_s, 1),
                "allowed_s": None if math.isinf(self.allowed_s) else round(self.allowed_s, 1), "spent_s": round(self.spent_s, 1),
                "refused": self.refused, "spent": self.refused > 0}

    def merge(self, earlier: dict | None) -> None:
        """Carry a resumed run's earlier spending into this session's budget."""
        if earlier:
            self.base_s += float(earlier.get("first_pass_s") or 0.0)
            self.spent_s += float(earlier.get("spent_s") or 0.0)
            self.refused += int(earlier.get("refused") or 0)
