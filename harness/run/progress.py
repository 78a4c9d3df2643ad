"""The sweep runner: every planned case becomes exactly one row in the journal, whatever happens.
"""

from __future__ import annotations

import sys

from harness.core.case import Case


class Progress:
    """A rich progress bar (current case, done/total, ETA) on a terminal; silent otherwise or when quiet."""

    def __init__(self, total: int, done: int, quiet: bool) -> None:
        self.bar = None
        if not quiet and sys.stderr.isatty():  # rich only on a terminal (lazy: start-up)
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True)
            self.task = self.bar.add_task("starting", total=total, completed=done)
            self.bar.start()

    def show(self, case: Case) -> None:
        if self.bar:
            self.bar.update(self.task, description=case.id[:48])

    def advance(self) -> None:
        if self.bar:
            self.bar.advance(self.task)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
