"""The `attnbench` command line. Every command has --help; bad input exits 2 with a one-line message.

Each command is one module of this package with ``register_cli(subparsers)`` and a ``cmd_*``
function. Command modules import only argparse-level code at import time; the work they do is
imported inside the command (so ``attnbench --help`` does not pay for torch or matplotlib; it takes about 0.5 s, mostly pandas).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from harness.cli import check, ci, compare, list, report, show, sweep
from harness.core.errors import InputError

COMMANDS = (list, check, sweep, show, report, compare, ci)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line with a hint (argparse prints the whole usage first)."""

    def error(self, message: str):
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message}; hint: `{self.prog} --help` lists every option\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="attnbench", description="Benchmark and compare self-attention implementations.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a reader gone away is met below, not at the interpreter's exit
        return code
    except InputError as exc:
        print(f"attnbench {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`attnbench show RUN | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error while exiting
        return 128 + signal.SIGPIPE
    except OSError as exc:  # a path that cannot be read or written: the user's to fix, so one line
        where = f" {str(exc.filename)!r}" if exc.filename else ""
        print(f"attnbench {args.command}: error: cannot use{where}: {exc.strerror or exc}; hint: check that the "
              "path exists and is writable, or pass another", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # Ctrl-C: 130; SIGTERM: 143; SIGHUP: 129 (harness.run.stops)
        signum = getattr(stop, "signum", None)
        what = f"stopped by {signal.Signals(signum).name}" if signum else "interrupted"
        print(f"attnbench {args.command}: {what}", file=sys.stderr)
        return 128 + (signum or signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
