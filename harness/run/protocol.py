"""The one subprocess worker protocol, used by `attnbench sweep --isolate` and `attnbench ci`.

The parent starts ``python <this harness>/run/worker.py`` (a real module file, run by path) with
``cwd`` and the front of ``PYTHONPATH`` set to the tree under test, and talks JSON lines:

1. the job, one line on the worker's stdin: ``{"mode": "sweep", "config": ..., "ceilings": ...}`` or
   ``{"mode": "gate", "cases": [...], "threads": ..., "clock": ..., "budget_s": ...}``;
2. the worker's first answer, ``{"ready": true, ...files it imported...}``;
3. one command per line, each answered by one line: ``{"case": <record>}`` -> the case's row fields
   (sweep), or ``{"case": <index>, "calibrate": bool}`` -> its median time (gate);
4. ``{"quit": true}`` (or end of input) ends the worker.

Answers are the lines of the worker's stdout that start with ``MARKER``; anything else a kernel
prints is ignored. A worker that dies or overruns its time becomes a ``WorkerDied`` with the
status (timeout, oom, error) and reason a row needs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

MARKER = "@@attnbench@@"
WORKER_FILE = Path(__file__).resolve().parent / "worker.py"
STARTUP_TIMEOUT_S = 120.0  # importing torch and the tree's variants


class WorkerDied(Exception):
    """The worker exited or was killed before answering; ``status`` and ``reason`` describe it for a row."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def reply(obj: dict) -> None:
    """Worker side: one answer line."""
    print(MARKER + json.dumps(obj), flush=True)


class WorkerProcess:
    """Parent side: a fresh worker process measuring with ``tree``'s code, one command at a time."""

    def __init__(self, tree: Path, job: dict, env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ)
        full_env.update(env or {})
        old = full_env.get("PYTHONPATH")
        full_env["PYTHONPATH"] = str(tree) + (os.pathsep + old if old else "")
        self.tree, self._killed_after = tree, None
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, str(WORKER_FILE)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, cwd=tree, env=full_env,
                                     text=True, bufsize=1)
        try:
            self.send(job)
            self.info = self.recv(STARTUP_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def send(self, obj: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died() from None

    def _kill(self, timeout_s: float) -> None:
        self._killed_after = timeout_s
        self.proc.kill()

    def recv(self, timeout_s: float) -> dict:
        """The next answer; the worker is killed when none comes within ``timeout_s`` (None: no limit)."""
        timer = threading.Timer(timeout_s, self._kill, (timeout_s,)) if timeout_s is not None else None
        if timer:
            timer.start()
        try:
            for line in self.proc.stdout:
                if line.startswith(MARKER):
                    return json.loads(line[len(MARKER):])
        finally:
            if timer:
                timer.cancel()
        raise self._died()

    def ask(self, command: dict, timeout_s: float) -> dict:
        self.send(command)
        return self.recv(timeout_s)

    def _died(self) -> WorkerDied:
        code = self.proc.wait()
        self.stderr.seek(0)
        tail = (self.stderr.read().strip().splitlines() or ["no output"])[-1]
        if self._killed_after is not None:
            return WorkerDied("timeout", (f"worker process gave no answer within {self._killed_after:g} s and was killed "
                                          f"(--timeout-s bounds each attempt at measuring a case)"))
        if code < 0:
            sig = signal.Signals(-code).name
            if sig == "SIGKILL":
                return WorkerDied("oom", f"worker process died with {sig} (killed: likely out of memory)")
            return WorkerDied("error", f"worker process died with {sig}")
        return WorkerDied("error", f"worker process exited with code {code}: {tail}")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"quit": True})
                self.proc.wait(timeout=30)
            except (WorkerDied, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.stderr.close()
