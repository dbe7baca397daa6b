"""The command line's error boundary: each kind of failure becomes one line and its documented exit code."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cloudseg.cli import boundary
from cloudseg.cli.main import main
from cloudseg.errors import ConfigError, DataError, ResourceError, os_error

ROOT = Path(__file__).resolve().parents[1]


def failing(monkeypatch, error: BaseException) -> None:
    """`cloudseg models` raises `error` where it would list the models."""
    import cloudseg.models.registry

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(cloudseg.models.registry, "count_parameters", fail)


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/out/a.png"), 3,
         "cloudseg: error: /out/a.png: no space left on the device; free some space or write to another disk"),
        (PermissionError(errno.EACCES, "Permission denied", "/out"), 3,
         "cloudseg: error: /out: permission denied; choose a folder you may write to, or fix its permissions"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/x"), 3,
         "cloudseg: error: /ro/x: the file system is read-only; write to another folder"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/in/x"), 2,
         "cloudseg: error: /in/x: no such file or folder"),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                      "allocate 93 GB"), 3,
         "cloudseg: error: out of memory in main memory; lower a batch or image size"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 3,
         "cloudseg: error: out of memory on the GPU; lower a batch or image size"),
        (MemoryError(), 3, "cloudseg: error: out of memory in main memory; lower a batch or image size"),
        (KeyboardInterrupt(), 130, "cloudseg: interrupted by SIGINT; every file written so far is complete"),
        (ValueError("something nobody foresaw\nsecond line"), 1,
         "cloudseg: unexpected error: ValueError: something nobody foresaw; rerun with --debug for the traceback, "
         "and report it"),
    ],
)  # fmt: skip
def test_each_kind_of_failure_is_one_line_with_its_exit_code(error, code, line, monkeypatch, capsys, user_view):
    failing(monkeypatch, error)
    assert main(["models"]) == code
    assert capsys.readouterr().err == line + "\n"


def test_lightnings_configuration_errors_are_one_line_with_exit_code_2(monkeypatch, capsys, user_view):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    failing(monkeypatch, MisconfigurationException("`GPUAccelerator` can not run on your system"))
    assert main(["models"]) == 2
    assert capsys.readouterr().err == (
        "cloudseg: error: Lightning refused the trainer settings: `GPUAccelerator` can not run on your system\n"
    )


def test_debug_shows_the_traceback_and_raises_what_nobody_foresaw(monkeypatch, capsys, user_view):
    failing(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "/out/a.png"))
    assert main(["--debug", "models"]) == 3  # a foreseen error keeps its exit code, after the traceback
    error = capsys.readouterr().err
    assert error.startswith("Traceback") and error.endswith("write to another disk\n")
    failing(monkeypatch, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        main(["models", "--debug"])  # --debug after the command works too
    monkeypatch.setenv(boundary.DEBUG_VARIABLE, "1")
    with pytest.raises(ValueError, match="a bug"):
        main(["models"])


def test_an_os_error_names_the_file_given_rather_than_its_own():
    error = os_error(OSError(errno.ENOSPC, "No space left on device", "/out/.a.png.x1.tmp"), "/out/a.png")
    assert isinstance(error, ResourceError) and str(error).startswith("/out/a.png: no space left")
    assert isinstance(os_error(OSError(errno.ENOTDIR, "Not a directory", "/a/b")), DataError)
    assert ResourceError.exit_code == 3 and ConfigError.exit_code == DataError.exit_code == 2


def test_a_reader_that_goes_away_ends_the_command_quietly_with_141():
    """`cloudseg models | head -1`: the reader closes the pipe early; cloudseg stops as `ls | head` does, with no
    error line and the shell's code for SIGPIPE, rather than calling the closed pipe a failing disk."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CLOUDSEG_DEBUG": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "cloudseg", "models"], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()  # before cloudseg writes its first line
    error = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141, error
    assert error == ""


def test_a_broken_pipe_elsewhere_is_still_an_error(monkeypatch, capfd, user_view):
    """A broken pipe that is not standard output's (a worker's, say) keeps its one error line."""
    failing(monkeypatch, BrokenPipeError(errno.EPIPE, "Broken pipe"))
    assert main(["models"]) == 3
    assert capfd.readouterr().err.strip() == "cloudseg: error: a file: Broken pipe"


def test_a_signal_during_a_command_ends_it_with_128_plus_its_number(tmp_path):
    """SIGTERM (a scheduler, `docker stop`) ends any command as Ctrl-C does, in one line: here the demo, stopped
    while it writes its synthetic scenes or trains."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CLOUDSEG_DEBUG": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "cloudseg", "demo", "--output", str(tmp_path / "demo")],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout.readline().startswith("1/5 synthetic scenes")  # the command is under way
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    _, error = process.communicate(timeout=600)
    assert process.returncode == 143, error[-2000:]
    assert error.strip().splitlines()[-1].startswith("cloudseg: stopped by SIGTERM")
