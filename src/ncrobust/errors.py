"""Exceptions that carry a user-facing message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UsageError(ValueError):
    """Bad input from the user: the CLI prints the message and exits with status 2."""


class TrainingDiverged(RuntimeError):
    """The loss became non-finite; the run stops and keeps its last good state."""


class DiskFull(RuntimeError):
    """A write failed for lack of disk space or quota; everything written before stays valid."""

    def __init__(self, message: str, path: object = None, needed: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.needed = needed


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``kill`` and SLURM send), raised like Ctrl-C so cleanup runs."""


def closest(word: str, choices: Iterable[str], n: int = 3) -> str:
    """``"; did you mean A or B?"`` for the choices closest to a mistyped ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)
    return f"; did you mean {' or '.join(close)}?" if close else ""
