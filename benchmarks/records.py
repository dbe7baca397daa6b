"""A benchmark's record: its figures with the command, code commit, package versions, device and date that made
them, as JSON under benchmarks/results/ (docs cite figures only from such records)."""

import argparse
import contextlib
import json
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _script() -> str:
    """The running script's path from the repository root, as one would type it there."""
    script = Path(sys.argv[0]).resolve()
    return str(script.relative_to(RESULTS.parents[1])) if script.is_relative_to(RESULTS.parents[1]) else sys.argv[0]


def commit() -> str:
    try:
        root = RESULTS.parents[1]
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=root)  # fmt: skip
        # Changed or new files of code; records and documentation do not count.
        changes = ["git", "status", "--porcelain", "--", ".", ":(exclude)benchmarks/results", ":(exclude)*.md"]
        dirty = subprocess.run(changes, capture_output=True, text=True, cwd=root)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + ("+uncommitted changes" if dirty.stdout.strip() else "")


def _versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("cloudseg", "torch", "lightning", "numpy", "opencv-python-headless", "onnxruntime"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def device() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {torch.get_num_threads()} threads"


def save_record(figures: dict, path: Path | str) -> Path:
    """Writes the figures with where they came from to `path` (atomically); returns the path."""
    from cloudseg.files import atomic_path

    provenance = {
        "command": shlex.join(["python", _script(), *sys.argv[1:]]),  # quoted as a shell would need it
        "commit": commit(),
        "versions": _versions(),
        "device": device(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record = provenance | figures | provenance  # provenance first in the file, and not overridden by a figure
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(record, indent=2) + "\n")
    return path


def write_record(name: str, figures: dict, folder: Path = RESULTS) -> Path:
    """Writes `<folder>/<name>.json`, the record that docs cite; returns its path."""
    return save_record(figures, folder / f"{name}.json")


def add_record_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the figures, with their provenance, to PATH")
    parser.add_argument("--record", metavar="NAME", help="also write them to benchmarks/results/NAME.json")


def report(figures: dict, args: argparse.Namespace) -> None:
    """Prints the figures as JSON and writes the records that --json and --record ask for."""
    print(json.dumps(figures, indent=2))
    if args.json:
        print(f"wrote {save_record(figures, args.json)}", file=sys.stderr)
    if args.record:
        print(f"wrote {write_record(args.record, figures)}", file=sys.stderr)


if __name__ == "__main__":
    # python benchmarks/records.py PATH KEY=JSON ...: a record of figures that a shell script measured
    figures = {key: json.loads(value) for key, _, value in (item.partition("=") for item in sys.argv[2:])}
    print(f"wrote {save_record(figures, sys.argv[1])}")
