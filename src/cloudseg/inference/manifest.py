"""`<output>/manifest.jsonl`: one line per finished image of a `predict` run, so that a rerun of the same command
skips what is done and a run killed at any moment loses at most the images in flight.

A line is appended only after every output of its image is on disk, and says what was written (each file's
SHA-256), by which checkpoints and settings, and what it found (size, class shares, seconds). An image is done
when its latest line matches the run's checkpoints and settings and every file it lists still has that hash; a
line cut short by a kill is ignored.
"""

import dataclasses
import json
import os
from pathlib import Path

from cloudseg.config import PredictConfig
from cloudseg.errors import os_error
from cloudseg.files import file_sha256

MANIFEST = "manifest.jsonl"
# Settings that change how fast outputs are made, not what they hold.
NOT_IN_OUTPUTS = ("io_workers", "memory_check")


def run_identity(checkpoints: list[Path], cfg: PredictConfig) -> dict:
    """What makes two runs' outputs the same: the checkpoints' hashes and the settings that shape outputs."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_OUTPUTS}
    identity = {"checkpoints": [file_sha256(path) for path in checkpoints], "settings": settings}
    return json.loads(json.dumps(identity))  # as a manifest line reads back (tuples become lists)


class Manifest:
    def __init__(self, folder: Path, identity: dict):
        self.path, self.identity = folder / MANIFEST, identity
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # the last line of a killed run
                self.entries[entry["name"]] = entry

    def done(self, name: str) -> bool:
        """The image's outputs were written by a run like this one and are on disk as they were written."""
        entry = self.entries.get(name)
        if entry is None or {k: entry.get(k) for k in self.identity} != self.identity:
            return False
        folder = self.path.parent
        return all((folder / file).is_file() and file_sha256(folder / file) == digest
                   for file, digest in entry["outputs"].items())  # fmt: skip

    def add(self, entries: list[dict]) -> None:
        """Appends the entries' lines, on disk before it returns."""
        if not entries:
            return
        lines = "".join(json.dumps({**entry, **self.identity}) + "\n" for entry in entries)
        try:
            with self.path.open("a") as handle:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise os_error(error, self.path) from error
        self.entries.update((entry["name"], entry | self.identity) for entry in entries)
