"""One writer per run folder: an exclusive OS-level lock (``flock``) on the folder's ``.lock`` file,
held while a sweep writes the folder. The OS frees it when its holder dies, however it dies; the file
names the holder (pid, host, since) for the message a second writer gets. Readers take no lock: every
file a reader opens is replaced whole (a temporary file and a rename) or appended by whole lines."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from pathlib import Path

from harness.core.errors import InputError

LOCK_FILE = ".lock"


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise InputError(f"{self.path.parent} is being written by another sweep ({holder}); one run folder has "
                             "one writer. Hint: wait for it to finish (attnbench show can read it meanwhile), or "
                             "pick another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": platform.node(), "since": time.time()}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on {info['host']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet said which"
