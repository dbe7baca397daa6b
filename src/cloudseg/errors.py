"""Named errors; the CLI prints their one-line message and exits with code 2."""


class CloudsegError(Exception):
    """Base class: a problem with the user's input, stated as what failed, where, and what was expected."""


class WeightsError(CloudsegError):
    """A weight file or checkpoint that cannot be found, read, or loaded into the model."""


class ConfigError(CloudsegError, ValueError):
    """An unknown name or an out-of-range value in a configuration or a call."""


class DataError(CloudsegError):
    """A dataset file or folder that is missing, unreadable, or not in the expected format."""
