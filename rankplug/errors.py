"""The errors rankplug raises for files it reads, in one module that imports nothing heavy.

Bad arguments raise ``ValueError`` / ``TypeError`` naming the argument. A file that is missing, corrupt,
malformed or in use raises one of these, with the file's name in the message. The command line turns them
into exit status 1 and a one-line message; this module imports no torch, so the command can catch them even
when it is interrupted while torch loads.
"""

from __future__ import annotations


class CheckpointError(RuntimeError, ValueError):
    """A checkpoint is missing, corrupt, holds something other than tensors and plain data, or does not fit.

    It is a ``RuntimeError`` (as it always was) and a ``ValueError`` (a checkpoint that does not fit the objects
    it is loaded into is a bad value), so handlers written for either keep working. Exported as
    ``rankplug.CheckpointError``.
    """


class RunDirectoryError(RuntimeError):
    """A file in a run directory is missing, malformed or out of range, or the directory is in use."""


class RunLockedError(RunDirectoryError):
    """Another live process holds the run directory's lock."""


class DataFileError(ValueError):
    """A data set's file is unreadable or holds something other than its format promises."""


__all__ = ["CheckpointError", "DataFileError", "RunDirectoryError", "RunLockedError"]
