"""Errors a user can cause. The CLI prints them as one line and exits with status 2."""


class CnnlabError(Exception):
    """A problem with the user's input (path, image, config value), with what to do about it."""


class ConfigError(CnnlabError):
    """An invalid config key or value."""


class DataError(CnnlabError):
    """A dataset that cannot be read as asked."""
