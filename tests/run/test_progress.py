"""Plain progress lines: every 5% or every 10 s, with elapsed time and an ETA; none when quiet."""

from __future__ import annotations

import io

from harness.core.case import Case
from harness.run.progress import Progress


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_plain_progress_lines_every_so_often():
    stream, clock = io.StringIO(), _Clock()
    progress = Progress(total=200, done=0, quiet=False, stream=stream, clock=clock)
    case = Case("naive")
    for i in range(200):
        progress.show(case)
        clock.t += 0.5  # 100 s in all: every 5% (10 cases, 5 s) comes first
        progress.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20 and lines[0].startswith("case 10/200 (5%), elapsed 0:00:05, ETA 0:01:35, last: naive/")
    assert lines[-1].startswith("case 200/200 (100%), elapsed 0:01:40, ETA 0:00:00")

    stream, clock = io.StringIO(), _Clock()
    progress = Progress(total=10_000, done=5_000, quiet=False, stream=stream, clock=clock)
    for _ in range(30):
        clock.t += 1.0  # slow cases: a line every 10 s
        progress.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("case 5010/10000 (50%), elapsed 0:00:10, ETA 1:23:10")

    stream = io.StringIO()
    quiet = Progress(total=3, done=0, quiet=True, stream=stream, clock=_Clock())
    for _ in range(3):
        quiet.advance()
    assert stream.getvalue() == ""
