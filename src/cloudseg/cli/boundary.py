"""The command line's error boundary: every failure ends in one line that names the file or setting and what to
do, and a documented exit code (docs/RELIABILITY.md); a traceback only with --debug or CLOUDSEG_DEBUG=1."""

import os
import select
import signal
import sys
import traceback

from cloudseg.errors import CloudsegError, ConfigError, InterruptError, ResourceError, os_error

EXIT_CODES = {
    0: "success",
    1: "an unforeseen error (a bug): rerun with --debug and report the traceback",
    2: "bad input or settings: a command-line option, config key, dataset file, checkpoint or weight file",
    3: "the machine refused: no space left, no permission, a read-only or failing disk, not enough memory",
    130: "stopped by SIGINT (Ctrl-C); every file written so far is complete",
    141: "standard output's reader went away (`cloudseg models | head`); every file written so far is complete",
    143: "stopped by SIGTERM (a scheduler's preemption, `docker stop`); every file written so far is complete",
}
DEBUG_VARIABLE = "CLOUDSEG_DEBUG"


def debug_requested(flag: bool) -> bool:
    return flag or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        return True
    # PyTorch's CPU allocator raises a plain RuntimeError
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def reader_gone() -> bool:
    """Whether nobody reads standard output any more: a pipe's reader closed it (`| head`)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout is no file (a test's capture)
        return False


def translate(error: BaseException, memory_hint: str) -> CloudsegError | None:
    """A foreseeable failure (of the input, a dependency or the machine) as cloudseg's own error, else None."""
    if isinstance(error, CloudsegError):
        return error
    if isinstance(error, KeyboardInterrupt):
        return InterruptError(signal.SIGINT, "interrupted by SIGINT; every file written so far is complete")
    if out_of_memory(error):
        where = "on the GPU" if "CUDA" in str(error) else "in main memory"
        return ResourceError(f"out of memory {where}; lower {memory_hint}")
    if isinstance(error, OSError):
        return os_error(error)
    lightning = sys.modules.get("lightning.pytorch.utilities.exceptions")
    if lightning is not None:
        if isinstance(error, lightning.SIGTERMException):
            return InterruptError(signal.SIGTERM, "stopped by SIGTERM; every file written so far is complete")
        if isinstance(error, lightning.MisconfigurationException):
            return ConfigError(f"Lightning refused the trainer settings: {error}")
    futures = sys.modules.get("concurrent.futures.process")
    if futures is not None and isinstance(error, futures.BrokenProcessPool):
        return ResourceError(f"a worker process died, most often because memory ran out; lower {memory_hint}")
    return None


def report(error: BaseException, memory_hint: str, debug: bool) -> int:
    """Prints the one line for `error` (and its traceback with `debug`); returns the exit code. An unforeseen
    error with `debug` is raised again, so that a test or a debugger sees it whole."""
    if isinstance(error, BrokenPipeError) and reader_gone():
        # as `ls | head` does: nothing to say, and nobody to say it to; stdout goes to /dev/null so that the
        # interpreter's last flush finds no broken pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    known = translate(error, memory_hint)
    if known is None:
        if debug:
            raise error
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(
            f"cloudseg: unexpected error: {type(error).__name__}{': ' + message if message else ''}; rerun with "
            "--debug for the traceback, and report it",
            file=sys.stderr,
        )
        return 1
    if debug:
        traceback.print_exception(error)
    print(f"cloudseg: error: {known}" if known.exit_code < 128 else f"cloudseg: {known}", file=sys.stderr)
    return known.exit_code
