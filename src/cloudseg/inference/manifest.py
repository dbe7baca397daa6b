"""`<output>/manifest.jsonl` (and `manifest.<k>.jsonl` of process k of a distributed run): one line per finished
image of a `predict` run, so that a rerun of the same command, in any number of processes, skips what is done and
a run killed at any moment loses at most the images in flight.

A line is appended only after every output of its image is on disk, and says what was written (each file's
SHA-256), from which input files, by which checkpoints, settings, precision, device and versions, and what it
found (size, class shares, seconds). An image is done when a line of it matches all of these and every file it
lists still has its hash. Lines that cannot be read (one cut short by a kill, say) count as missing.
"""

import contextlib
import dataclasses
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch

from cloudseg import __version__
from cloudseg.config import PredictConfig
from cloudseg.data.io import SampleFiles
from cloudseg.errors import os_error
from cloudseg.files import file_sha256
from cloudseg.inference.geotiff import SceneFile, SceneScaling

MANIFEST = "manifest.jsonl"
# Settings that change how fast outputs are made, not what they hold.
NOT_IN_OUTPUTS = ("io_workers", "memory_check")


def run_identity(
    checkpoints: list[Path], cfg: PredictConfig, device: torch.device, bf16: bool, scaling: SceneScaling | None = None
) -> dict:
    """What makes two runs' outputs the same: the checkpoints' hashes, the settings that shape outputs (with a
    scene's scaling), the precision and kind of device they ran in, and the versions that computed them."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_OUTPUTS}
    if scaling is not None:
        settings["scaling"] = dataclasses.asdict(scaling)
    identity = {
        "checkpoints": [file_sha256(path) for path in checkpoints],
        "settings": settings,
        "precision": "bf16" if bf16 else "32",
        "device": device.type,
        "versions": {"cloudseg": __version__, "torch": torch.__version__},
    }
    return json.loads(json.dumps(identity))  # as a manifest line reads back (tuples become lists)


def input_files(item: SampleFiles | SceneFile) -> dict:
    """An image's input files as a manifest line records them: path, size and modification time."""
    found = {}
    for path in item.paths:
        status = path.stat()
        found[str(path)] = [status.st_size, status.st_mtime_ns]
    return found


class Manifest:
    """The manifests of one output folder, read once; this process appends to its own as images finish
    (`manifest.jsonl`, or `manifest.<k>.jsonl` for process k of a distributed run), under a lock, as independent
    jobs may share one."""

    def __init__(self, folder: Path, identity: dict):
        self.folder, self.identity = folder, identity
        self.entries: dict[str, list[dict]] = defaultdict(list)
        self.path = folder / MANIFEST
        for path in sorted(folder.glob("manifest*.jsonl")) if folder.is_dir() else ():
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as error:
                raise os_error(error, path) from error
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if (
                    isinstance(entry, dict)
                    and isinstance(entry.get("name"), str)
                    and isinstance(entry.get("outputs"), dict)
                ):
                    self.entries[entry["name"]].append(entry)

    def write_as(self, rank: int) -> None:
        """Appends go to the manifest of process `rank`."""
        self.path = self.folder / (MANIFEST if rank == 0 else f"manifest.{rank}.jsonl")

    def done(self, item: SampleFiles | SceneFile) -> bool:
        """The image's outputs were written from these input files by a run like this one, and are on disk as
        they were written."""
        return any(self._holds(entry, item) for entry in self.entries.get(item.name, ()))

    def _holds(self, entry: dict, item: SampleFiles | SceneFile) -> bool:
        if {k: entry.get(k) for k in self.identity} != self.identity:
            return False
        if entry.get("inputs") != input_files(item) or not entry["outputs"]:
            return False
        return all((self.folder / file).is_file() and file_sha256(self.folder / file) == digest
                   for file, digest in entry["outputs"].items())  # fmt: skip

    def add(self, entries: list[dict]) -> None:
        """Appends the entries' lines (with the run's identity), on disk before it returns."""
        if not entries:
            return
        lines = "".join(json.dumps({**entry, **self.identity}) + "\n" for entry in entries).encode()
        try:
            with self.path.open("a+b") as handle, _locked(handle):
                if handle.seek(0, os.SEEK_END):  # a killed run's last line, cut short: ours must not be glued to it
                    handle.seek(-1, os.SEEK_END)
                    lines = (b"" if handle.read(1) == b"\n" else b"\n") + lines
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise os_error(error, self.path) from error


@contextlib.contextmanager
def _locked(handle) -> Iterator[None]:
    """An exclusive lock on the open file while appending: jobs that share an output folder (a Slurm array) may
    each append to its `manifest.jsonl`, and no two lines may interleave. Where there are no POSIX locks
    (Windows), none is taken."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
