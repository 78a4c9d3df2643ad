"""The errors a user can cause. Their messages name the offending value and end with a hint; the CLI
turns them into one line and exit status 2."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (shapes, dtypes, pattern parameters). The message names the value and a hint."""


class WrongOutput(Exception):
    """A kernel returned something that cannot be its pattern's output; the message says what."""


class UnsupportedCaseError(InputError):
    """A variant was asked to run a case it cannot run; the message carries its reasons."""


def one_line(exc: BaseException) -> str:
    """An exception as one line of text, ``"TypeName: first line of its message"`` (the name alone when
    the message is empty): the reason a row, a log line or an error message gives for it."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0].strip()}" if text else type(exc).__name__
