"""Named errors, each with the exit code the CLI gives it (docs/RELIABILITY.md lists them all)."""

import errno
import os


class CloudsegError(Exception):
    """Base class: a problem stated as what failed, where, and what to do. Exit code 2: bad input or settings."""

    exit_code = 2


class WeightsError(CloudsegError):
    """A weight file or checkpoint that cannot be found, read, or loaded into the model."""


class ConfigError(CloudsegError, ValueError):
    """An unknown name or an out-of-range value in a configuration, a command line or a call."""


class DataError(CloudsegError):
    """A dataset file or folder that is missing, unreadable, or not in the expected format."""


class ResourceError(CloudsegError):
    """The machine refused: no space left, no permission, an I/O error, not enough memory. Exit code 3."""

    exit_code = 3


class InterruptError(CloudsegError):
    """A signal (SIGINT, SIGTERM) stopped the command at a safe point. Exit code 128 + the signal's number, as a
    shell reports a process that a signal ended: 130 for SIGINT, 143 for SIGTERM."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum

    def __reduce__(self):  # raised in a worker process, it is pickled back to the parent
        return type(self), (self.signum, str(self))


_OS_ADVICE = {
    errno.ENOSPC: (ResourceError, "no space left on the device; free some space or write to another disk"),
    errno.EDQUOT: (ResourceError, "disk quota exceeded; free some space or write to another disk"),
    errno.EROFS: (ResourceError, "the file system is read-only; write to another folder"),
    errno.EACCES: (ResourceError, "permission denied; choose a folder you may write to, or fix its permissions"),
    errno.EPERM: (ResourceError, "operation not permitted; choose a folder you may write to, or fix its permissions"),
    errno.EIO: (ResourceError, "input/output error: the disk or network file system failed; check it, then rerun"),
    errno.ENOMEM: (ResourceError, "not enough memory"),
    errno.ENOENT: (DataError, "no such file or folder"),
    errno.ENOTDIR: (DataError, "a part of this path is a file, not a folder"),
    errno.EISDIR: (DataError, "this is a folder; expected a file"),
    errno.EEXIST: (DataError, "a file is in the way of this folder"),
}


def os_error(error: OSError, path: str | os.PathLike | None = None) -> CloudsegError:
    """An operating-system error as a one-line cloudseg error naming `path` (default: the error's own file)."""
    kind, advice = _OS_ADVICE.get(error.errno, (ResourceError, error.strerror or str(error)))
    where = path if path is not None else error.filename if error.filename is not None else "a file"
    return kind(f"{where}: {advice}")
