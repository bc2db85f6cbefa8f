"""Errors a user can cause. The CLI prints them as one line; everything else is a bug and keeps its traceback."""


class PETLBenchError(Exception):
    """A user-facing error: bad name, bad option, bad file. The message names the value and the fix."""


class ConfigError(PETLBenchError, ValueError):
    """A configuration key or value that the target does not accept."""


class UnknownNameError(PETLBenchError, KeyError):
    """A name that is not in a registry (method, backbone, task)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CheckpointError(PETLBenchError):
    """A tuned-weights file that is missing, malformed, or made for another model."""


class MergeError(PETLBenchError):
    """A model that cannot be merged into a plain backbone."""
