"""Errors meant for the user: the CLI prints them without a traceback."""


class XLMError(Exception):
    """Base class of errors caused by input, files or configuration."""


class DataError(XLMError):
    """Malformed or inconsistent data; the message names the file (and line when known)."""


class CheckpointError(XLMError):
    """A checkpoint that is missing, corrupt, unsafe or incompatible."""
