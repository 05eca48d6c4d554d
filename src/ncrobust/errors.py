"""Exceptions that carry a user-facing message."""


class UsageError(ValueError):
    """Bad input from the user: the CLI prints the message and exits with status 2."""


class TrainingDiverged(RuntimeError):
    """The loss became non-finite; the run stops and keeps its last good state."""
