"""Progress of a sweep on stderr: a rich bar on a terminal; elsewhere (CI logs, ``| tee``) a plain line
every so often (case i/N, elapsed, ETA); nothing with ``--quiet``.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time

from harness.core.case import Case

PLAIN_EVERY_S = 10.0  # a plain line at least this often while cases finish ...
PLAIN_EVERY_FRACTION = 0.05  # ... and whenever another 5% of the cases is done


def _clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """A rich progress bar (current case, done/total, ETA) on a terminal; plain lines otherwise; silent when quiet.

    ``after_s`` (a callable, or None) estimates the seconds the run will spend after these cases (its
    planned rounds and end-of-run re-check: ``harness.run.eta``); the ETA includes them. ``bound_s`` (a
    callable, or None) gives the most seconds these cases may still take (what the trust budget has
    left, for work that stops when it is spent): the ETA is at most that, and says so. ``stream`` and
    ``clock`` are injectable (tests use a fake clock).
    """

    def __init__(self, total: int, done: int, quiet: bool, stream=None, clock=time.monotonic,
                 every_s: float = PLAIN_EVERY_S, every_fraction: float = PLAIN_EVERY_FRACTION,
                 after_s=None, bound_s=None) -> None:
        self.bar = None
        self.after_s, self.bound_s = after_s, bound_s
        self.plain = False
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.done, self.start_done = total, done, done
        self.clock, self.every_s, self.every_fraction = clock, every_s, every_fraction
        self.case: Case | None = None
        self.t0 = clock()
        if quiet:
            return
        if self.stream.isatty():  # rich only on a terminal (lazy: start-up)
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                    TextColumn("{task.fields[after]}"), transient=True)
            self.task = self.bar.add_task("starting", total=total, completed=done, after="")
            self.bar.start()
        else:
            self.plain = True
            self.last_t = self.t0
            self.last_step = self._step(done)

    def _step(self, done: int) -> int:
        return int(done / max(self.total, 1) / self.every_fraction) if self.every_fraction > 0 else 0

    def show(self, case: Case) -> None:
        self.case = case
        if self.bar:
            self.bar.update(self.task, description=case.id[:48])

    def advance(self) -> None:
        self.done += 1
        if self.bar:
            after = self._after()
            text = f"+ re-check ~{_clock_text(after)}" if after >= 1 else ""
            bound = self._bound(self._left(self.clock()))
            if bound is not None:
                text = f"at most {_clock_text(bound)} (the trust budget left)"
            self.bar.update(self.task, advance=1, after=text)
        elif self.plain:
            now = self.clock()
            step = self._step(self.done)
            if now - self.last_t >= self.every_s or step > self.last_step or self.done == self.total:
                self.last_t, self.last_step = now, step
                self.stream.write(self.line(now) + "\n")
                self.stream.flush()

    def _after(self) -> float:
        return self.after_s() if self.after_s is not None else 0.0

    def _left(self, now: float) -> float | None:
        """The seconds left at this session's pace, plus ``after_s``; None before a case has finished."""
        ran = self.done - self.start_done
        return (now - self.t0) / ran * (self.total - self.done) + self._after() if ran > 0 else None

    def _bound(self, left: float | None) -> float | None:
        """``bound_s`` when it is finite and shorter than ``left`` (or nothing is known yet), else None."""
        if self.bound_s is None or self.done >= self.total:
            return None
        bound = max(0.0, self.bound_s())
        return bound if math.isfinite(bound) and (left is None or bound < left) else None

    def line(self, now: float) -> str:
        """``case 12/240 (5%), elapsed 0:01:02, ETA 0:19:38 (0:01:10 of it re-measuring), last: <case id>``;
        the cases' ETA from this session's pace, plus ``after_s``, at most ``bound_s``."""
        elapsed, after = now - self.t0, self._after()
        left = self._left(now)
        bound = self._bound(left)
        if bound is not None:
            eta = f"{_clock_text(bound)} at most (the trust budget left)"
        else:
            eta = _clock_text(left) if left is not None else "unknown"
            if left is not None and after >= 1:
                eta += f" ({_clock_text(after)} of it re-measuring)"
        pct = 100 * self.done // max(self.total, 1)
        last = f", last: {self.case.id}" if self.case is not None else ""
        return f"case {self.done}/{self.total} ({pct}%), elapsed {_clock_text(elapsed)}, ETA {eta}{last}"

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


def say(quiet: bool, msg: str) -> None:
    """A line on stderr for the user (nothing when ``quiet``)."""
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


class Phases:
    """Where a run's time goes: seconds per phase (measuring the cases, further rounds, cross-cell
    re-measurements, the end's machine figures, the re-check and its waits, writing the tables),
    summed over the run and its resumes in ``meta["phases_s"]`` (run.json; ``attnbench show``)."""

    def __init__(self, meta: dict, clock=time.perf_counter) -> None:
        self.totals = meta.setdefault("phases_s", {})
        self.clock = clock

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = self.clock()
        try:
            yield
        finally:
            self.totals[name] = round(self.totals.get(name, 0.0) + self.clock() - t0, 3)
