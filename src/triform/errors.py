"""Errors a user can cause and fix; the CLI prints their message on one line and exits non-zero."""


class TriformError(Exception):
    """Base class: the message names the file, line or field at fault and what was expected."""


class ConfigError(TriformError, ValueError):
    """A configuration field holds a value the model cannot be built from."""


class IncompatiblePair(TriformError, ValueError):
    """An objective was paired with an architecture or attention pattern it cannot train."""
