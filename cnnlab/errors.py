"""Errors a user can cause. The CLI prints them as one line and exits with status 2."""


class CnnlabError(Exception):
    """A problem with the user's input (path, image, config value), with what to do about it."""


class ConfigError(CnnlabError):
    """An invalid config key or value."""


class DataError(CnnlabError):
    """A dataset that cannot be read as asked."""


class TrainingError(CnnlabError):
    """Training cannot go on (e.g. a non-finite loss)."""


class Interrupted(CnnlabError):
    """A stop was requested (SIGINT/SIGTERM); the state was checkpointed."""


class CheckpointMismatch(CnnlabError):
    """The checkpoint to resume from holds weights of another model."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of a library's exception message (its name when the message is empty), to quote
    in a one-line error."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line[:limit] if limit else line
