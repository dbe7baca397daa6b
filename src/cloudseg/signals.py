"""SIGINT and SIGTERM as a request to stop: at once, or at the next safe point of a training run.

Every file cloudseg writes appears whole or not at all (`files.atomic_path`), so stopping anywhere loses only the
work in progress. SIGTERM is what Slurm's preemption, `docker stop` and most schedulers send; it is handled like
Ctrl-C.
"""

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

from cloudseg.errors import InterruptError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _handling(handler: Callable) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _raise_at_once(signum: int, frame) -> None:
    raise InterruptError(signum, f"stopped by {signal.Signals(signum).name}; every file written so far is complete")


def stop_at_once() -> contextlib.AbstractContextManager:
    """Within the block, SIGINT and SIGTERM raise InterruptError wherever the main thread is."""
    return _handling(_raise_at_once)


class StopRequest:
    """The signal that asked a run to stop, if one has: within `handling()`, a first SIGINT or SIGTERM only marks
    the request, which the run checks at its safe points; a second one raises InterruptError at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a signal"

    def _mark(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise InterruptError(signum, f"stopped at once by a second {signal.Signals(signum).name}")
        self.signum = signum

    def handling(self) -> contextlib.AbstractContextManager:
        return _handling(self._mark)


def ignore_stop_signals(*_: object) -> None:
    """For worker processes (usable as a DataLoader's worker_init_fn): their parent decides when to stop and shuts
    them down itself. A terminal's Ctrl-C and Slurm's SIGTERM reach every process of the group; a worker that died
    of them would turn a clean stop into a crash report of the parent."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
