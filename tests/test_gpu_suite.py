"""benchmarks/gpu_suite.sh in its CPU smoke configuration: every stage runs and writes what the summary reads.
Speeds are not asserted; this guards the script that a lent GPU session runs in one call."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout")
@pytest.mark.parametrize(
    ("part", "files"),
    [
        ("goals", {"parity.json", "train_ladder.json", "infer_cuda_graphs_2.json", "infer_cuda_graphs_4.json"}),
        ("archive", {"archive.json"}),
        ("models", {"parity.json", "train_ladder.json", "infer_compare.json", "infer_scene.json"}),
        ("profile", {"train_profile.json", "train_compiled.json", "train_cuda_graphs.json"}),
        (
            "training",
            {
                "data_png.json",
                "data_cache.json",
                "train_recipe_metrics.csv",
                "train_recipe_profile.txt",
                "predict.json",
                "writer_contention.json",
            },
        ),
        ("recipe", {"recipe100.json", "recipe100_metrics.csv"}),
    ],
)
def test_every_stage_of_the_suite_runs_and_leaves_its_result(part, files, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "SUITE_SMOKE": "1", "OUT": str(out), "SUITE_WORK": str(tmp_path), "PYTHON": sys.executable}
    env.pop("CLOUDSEG_RUN_DIR", None)
    result = subprocess.run(
        ["bash", "benchmarks/gpu_suite.sh", part], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exits = re.findall(r"exit (\d+) after", result.stdout)
    assert len(exits) == {"goals": 4, "archive": 1, "models": 4, "profile": 3, "training": 7, "recipe": 3}[
        part
    ] and set(exits) == {"0"}, result.stdout[-3000:]
    assert files | {"suite.log"} == {p.name for p in out.iterdir()}  # the device tool returns at most 8 files
    for name in {name for name in files if name.endswith(".json")}:  # each a record: figures and their provenance
        assert {"command", "commit", "versions", "device", "date"} <= set(json.loads((out / name).read_text())), name
    if part == "recipe":  # the smoke recipe runs its 2 epochs to the end, and the summary says so
        assert json.loads((out / "recipe100.json").read_text())["finished"] is True
        assert "the 2-epoch recipe: finished after" in result.stdout and "2 epochs logged" in result.stdout
    if part in ("training", "recipe"):  # train()'s account of its time, from the log
        assert re.search(r"from their logs:\n  start-up: dataset checked in .*\n  fit took", result.stdout)
