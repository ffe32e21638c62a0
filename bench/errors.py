"""Errors that reach the user as one line and an exit code (see the CLI contract)."""


class UsageError(Exception):
    """Bad usage or bad input: the CLI prints the message as one line and exits 2.

    The message says what was wrong and what would be right.
    """


class OutOfMemory(UsageError):
    """The device ran out of memory at this batch size: exit 2 for `bench run`, a failed point in a grid."""


class StorageError(UsageError):
    """The output folder cannot be written (full disk, read-only, no permission): one line, exit 2.
    What was written before stays; the message says how to continue."""
