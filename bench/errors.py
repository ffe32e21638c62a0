"""Errors that reach the user as one line, and the exit codes of the CLI contract."""

from enum import IntEnum


class ExitCode(IntEnum):
    """How a `bench` command ended (pytest's ExitCode is the model): one place maps outcomes to codes."""

    OK = 0  # done; a grid's every run completed or was already complete
    FAILED = 1  # a run diverged or failed (its record says why), or anything unexpected
    USAGE = 2  # bad usage or bad input, storage faults: one line on stderr
    INTERRUPTED = 130  # Ctrl-C outside a run; a run stopped by signal N exits 128 + N after checkpointing

    @classmethod
    def signal(cls, signum: int) -> int:
        """A run stopped by a signal after checkpointing exits 128 + the signal's number."""
        return 128 + signum


class UsageError(Exception):
    """Bad usage or bad input: the CLI prints the message as one line and exits 2.

    The message says what was wrong and what would be right.
    """


class OutOfMemory(UsageError):
    """The device ran out of memory at this batch size: exit 2 for `bench run`, a failed point in a grid."""


class StorageError(UsageError):
    """The output folder cannot be written (full disk, read-only, no permission): one line, exit 2.
    What was written before stays; the message says how to continue."""
