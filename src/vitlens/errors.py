"""User-facing errors.

Every failure a user can cause (an unknown model name, a bad path, a wrong config value) is a
`VitlensError`; the command line prints its message without a traceback and exits with status 2.
"""


class VitlensError(Exception):
    """A problem with the user's input, with a message that says what to do about it."""

    exit_code = 2


class UnknownNameError(VitlensError):
    """A model, dataset or analysis name that is not registered."""


class ConfigError(VitlensError):
    """A configuration value of the wrong type or outside its allowed range."""
