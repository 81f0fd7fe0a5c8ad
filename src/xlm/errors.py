"""Errors meant for the user: the CLI prints them without a traceback."""


class XLMError(Exception):
    """Base class of errors caused by input, files or configuration."""


class DataError(XLMError):
    """Malformed or inconsistent data; the message names the file (and line when known)."""


class CheckpointError(XLMError):
    """A checkpoint that is missing, corrupt, unsafe or incompatible."""


class Interrupted(KeyboardInterrupt):
    """The user (Ctrl-C, SIGINT) or the system (SIGTERM) stopped a command after it saved what
    it could; the CLI prints one line and exits with 128 + the signal number."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message)
        self.signum = signum
        self.message = message
