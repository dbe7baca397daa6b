"""Safe output files: everything cloudseg writes appears whole or not at all."""

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cloudseg.errors import os_error


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# mkstemp makes files private (0600); outputs get the permissions any other new file would have.
NEW_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, previous: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it is renamed over `path`, on failure removed.

    A crash or kill during the write leaves the previous file (if any) untouched; with `previous`, the file it
    replaces is kept under that name. An operating-system error in the write (a full disk, say) is raised naming
    `path`, not the temporary file, as a cloudseg error.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
    except OSError as error:
        raise os_error(error) from error
    temporary = Path(name)
    try:
        yield temporary
        # After the write: some writers (safetensors) replace the file they are given with a private one.
        os.chmod(temporary, path.stat().st_mode & 0o7777 if path.exists() else NEW_FILE_MODE)
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(temporary, path)
    except OSError as error:
        raise os_error(error, path) from error
    finally:
        temporary.unlink(missing_ok=True)
