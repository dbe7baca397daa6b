"""Safe output files: everything cloudseg writes appears whole or not at all."""

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cloudseg.errors import os_error


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# mkstemp makes files private (0600); outputs get the permissions any other new file would have.
NEW_FILE_MODE = 0o666 & ~_umask()


def _keep_as(path: Path, previous: Path) -> None:
    """`previous` becomes `path`'s current content, while `path` itself stays in place until it is replaced: a
    hard link renamed over `previous`, so that no moment lacks either file. Where the file system has no hard
    links, `path` is renamed instead, which leaves it missing until the new file arrives."""
    link = previous.with_name(f".{previous.name}.link")
    try:
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, previous)
    except OSError:
        link.unlink(missing_ok=True)
        os.replace(path, previous)


def _temporary_beside(path: Path) -> Path:
    """A new empty file `.<name>.<random>.tmp` beside `path`, its folder made first; an operating-system error is
    raised naming the folder or `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise os_error(error) from error  # names the folder that cannot be made
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
    except OSError as error:
        raise os_error(error, path) from error
    return Path(name)


def check_writable(path: str | os.PathLike) -> None:
    """Fails now, in the words `atomic_path` would use later, if `path` cannot be written: before hours of work
    whose result goes there."""
    _temporary_beside(Path(path)).unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, previous: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it is renamed over `path`, on failure removed.

    A crash or kill during the write leaves the previous file (if any) untouched; with `previous`, the file it
    replaces is kept under that name. An operating-system error in the write (a full disk, say) is raised naming
    `path`, not the temporary file, as a cloudseg error.
    """
    path = Path(path)
    temporary = _temporary_beside(path)
    try:
        yield temporary
        # After the write: some writers (safetensors) replace the file they are given with a private one.
        os.chmod(temporary, path.stat().st_mode & 0o7777 if path.exists() else NEW_FILE_MODE)
        if previous is not None and path.exists():
            _keep_as(path, Path(previous))
        os.replace(temporary, path)
    except OSError as error:
        raise os_error(error, path) from error
    finally:
        temporary.unlink(missing_ok=True)
