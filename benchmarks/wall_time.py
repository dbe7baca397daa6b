"""Wall time of a whole command, start-up included, as a user runs it, with what the command itself wrote.

    python benchmarks/wall_time.py --repeats 2 --record predict_cpu_bf16 -- \
        cloudseg predict --checkpoint best.safetensors --input data/test --output masks --predict.precision bf16
    python benchmarks/wall_time.py --collect 'cloudseg-demo/run/*/eval_test/metrics.json' --record demo_cpu -- \
        cloudseg demo

Each repeat runs the command afresh (its output printed as it comes); `--collect` adds the newest file matching
each glob, read as JSON after the last repeat, to the record, so a run's scores travel with its time.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from records import add_record_options, report


def newest(pattern: str) -> Path:
    matches = sorted(glob.glob(pattern), key=os.path.getmtime)
    if not matches:
        sys.exit(f"wall_time.py: --collect {pattern}: no file matches")
    return Path(matches[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--collect", action="append", default=[], metavar="GLOB", help="a JSON file the command writes")
    add_record_options(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="after --: the command to time")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to time after --")
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True)
        seconds.append(round(time.perf_counter() - started, 2))
    collected = {str(path): json.loads(path.read_text()) for path in map(newest, args.collect)}
    figures = {"timed": command, "wall_s": seconds, "median_wall_s": statistics.median(seconds)}
    report(figures | ({"collected": collected} if collected else {}), args)


if __name__ == "__main__":
    main()
