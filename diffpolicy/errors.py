"""User-facing errors. The CLI turns any of these into one line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a config typo, a broken file, a wrong env id."""


class ConfigError(UserError):
    """A config key, type or value is invalid."""


class DatasetError(UserError):
    """A dataset file is missing, unreadable, foreign or inconsistent."""


class CheckpointError(UserError):
    """A run directory is missing files, tampered with, or does not match its config."""
