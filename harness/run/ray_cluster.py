"""Reaching Ray: importing it (or saying how to install it) and connecting to a cluster address
within a bounded time, with one line instead of Ray's retry warnings when it cannot."""

from __future__ import annotations

import contextlib
import os
import socket
import sys

from harness.bench.memory import quiet_stderr_fd
from harness.core.errors import InputError, one_line

INSTALL_HINT = "pip install -e '.[ray]' (or pip install 'ray>=2.40')"


CONNECT_TIMEOUT_S = 10.0  # a --ray-address that does not answer within this is refused


def import_ray():
    """The ``ray`` module, or an InputError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--executor ray needs Ray, which is not installed in this Python "
                         f"({sys.executable}); hint: {INSTALL_HINT}") from None
    return ray


def _check_reachable(address: str) -> None:
    """host:port must accept a TCP connection within CONNECT_TIMEOUT_S (ray.init may wait much longer)."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray-address {address!r} is not host:port, ray://host:port or auto; "
                         "hint: the address `ray start --head` printed, e.g. 10.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise InputError(f"--ray-address {address!r} is unreachable ({one_line(exc)}); hint: start "
                         "the cluster with `ray start --head` there, or omit --ray-address for a local instance") from None


@contextlib.contextmanager
def _bounded_connect():
    """ray.init(address=...) gives up after CONNECT_TIMEOUT_S (Ray's own retries last ~20 s), and its
    per-retry C++ warnings on stderr are held back: the failure is reported as one line instead."""
    old_wait = os.environ.get("RAY_gcs_server_port_wait_time_s")
    os.environ["RAY_gcs_server_port_wait_time_s"] = str(int(CONNECT_TIMEOUT_S))
    sys.stderr.flush()
    with quiet_stderr_fd():
        try:
            yield
        finally:
            if old_wait is None:
                os.environ.pop("RAY_gcs_server_port_wait_time_s", None)
            else:
                os.environ["RAY_gcs_server_port_wait_time_s"] = old_wait
