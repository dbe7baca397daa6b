"""Seeded experiments on a labelled dataset: train each named setting with several seeds, evaluate the test split
once per final model, and tabulate the mean and spread. Every run is a plain `cloudseg train` + `cloudseg
evaluate`, so each row can also be reproduced by hand; the exact commands are kept in each run's result.json.

    python benchmarks/ablation.py run cmx_b0 rgb_b0 early_b0 --root ../shared/data/l8biome --out runs/ablation
    python benchmarks/ablation.py run cmx_b0_synth --root ... --out ... --init-from <synth>/checkpoints/best.safetensors
    python benchmarks/ablation.py run cmx_b0 --seeds 0 --folds 5 --root ... --out ...  # 5-fold cross-validation
    python benchmarks/ablation.py table --out runs/ablation [--split val]

Finished runs are skipped, so an interrupted batch continues where it stopped. Settings are chosen on the
validation columns (`--split val`); the test split is only read by the final evaluation of each run.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cloudseg.schema import CLASS_NAMES
from cloudseg.training.run import RUN_DIR_VARIABLE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import commit, write_record

# sqrt(share of clear / share of class) over the l8biome training pixels (56.3, 31.2, 10.5, 2.1%)
BALANCED = ["--loss.class_weights", "[1.0, 1.34, 2.32, 5.2]"]
# Every experiment starts from the shipped config and the same schedule; these are its differences.
EXPERIMENTS = {
    "rgb_b0": ["--model.name", "segformer_b0"],
    "rgb_b1": ["--model.name", "segformer_b1"],  # 14.7M parameters: more than cmx_b0 (12.1M)
    "early_b0": ["--model.name", "segformer_early_b0"],
    "cmx_b0": [],
    "cmx_b0_balanced": BALANCED,
    "cmx_b0_synth": [],  # with --init-from: fine-tuned from a synthetic-scene run
    "rgb_b2": ["--model.name", "segformer_b2"],
    "early_b2": ["--model.name", "segformer_early_b2"],
    "cmx_b2": ["--model.name", "cmx_b2"],
}


def run_one(name: str, seed: int, fold: int | None, args: argparse.Namespace) -> dict:
    folder = Path(args.out) / f"{name}{args.tag}" / (f"seed{seed}" if fold is None else f"seed{seed}_fold{fold}")
    result_file = folder / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    overrides = list(EXPERIMENTS[name])
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides += [f"--{key}", value]
    if args.init_from:
        overrides += ["--model.init_from", str(args.init_from)]
    if fold is not None:
        overrides += ["--data.folds", str(args.folds), "--data.fold", str(fold)]
    train = [sys.executable, "-m", "cloudseg", "train", "--config", args.config, "--data.root", str(args.root),
             "--trainer.max_epochs", str(args.epochs), "--trainer.seed", str(seed),
             "--run.output_dir", str(folder), "--run.name", "run", *overrides]  # fmt: skip
    started = time.perf_counter()
    # Each run gets its own folder: a run folder inherited from a calling process must not be reused.
    environment = {key: value for key, value in os.environ.items() if key != RUN_DIR_VARIABLE}
    subprocess.run(train, check=True, env=environment)
    minutes = (time.perf_counter() - started) / 60
    run_dir = max((folder / "run").iterdir())  # the timestamped run folder
    checkpoint = run_dir / "checkpoints" / "best.safetensors"
    evaluate = [sys.executable, "-m", "cloudseg", "evaluate", "--checkpoint", str(checkpoint),
                "--data.root", str(args.root), "--split", "test", "--panels", "5"]  # fmt: skip
    subprocess.run(evaluate, check=True)
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    test = json.loads((run_dir / "eval_test" / "metrics.json").read_text())
    result = {
        "experiment": f"{name}{args.tag}",
        "seed": seed,
        "fold": fold,
        "train_minutes": round(minutes, 2),
        "best_epoch": best["epoch"],
        "val": best["metrics"],
        "test": {key: value for key, value in test.items() if key in best["metrics"]},
        # the temperature fitted on validation, and the ECE before -> after there and on the test split
        "calibration": {
            "temperature": best["calibration"]["temperature"],
            "val_ece": [best["calibration"]["before"]["ece"], best["calibration"]["after"]["ece"]],
            "test_ece": [test["ece_uncalibrated"], test["ece"]],
        }
        if "calibration" in best
        else None,
        "run_dir": str(run_dir),
        "commit": commit(),
        "commands": [" ".join(train), " ".join(evaluate)],
    }
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    return result


def summarise(results: list[dict], split: str) -> dict:
    """Mean, standard deviation and range over seeds of each score."""
    keys = ["mIoU", *(f"iou/{c}" for c in CLASS_NAMES), "accuracy"]
    table = {}
    for key in keys:
        values = np.array([r[split][key] for r in results])
        table[key] = {"mean": values.mean(), "std": values.std(ddof=1) if len(values) > 1 else 0.0,
                      "min": values.min(), "max": values.max()}  # fmt: skip
    table["train_minutes"] = float(np.mean([r["train_minutes"] for r in results]))
    return table


def markdown(out: Path, split: str) -> str:
    rows = ["| experiment | seeds | mIoU mean ± sd [min, max] | clear | thick cloud | thin cloud | shadow | pixel acc. "
            "| train min/run |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for experiment in sorted(p for p in out.iterdir() if p.is_dir()):
        results = [json.loads(f.read_text()) for f in sorted(experiment.glob("seed*/result.json"))]
        if not results:
            continue
        s = summarise(results, split)
        cell = {key: f"{v['mean']:.3f} ± {v['std']:.3f}" for key, v in s.items() if isinstance(v, dict)}
        miou = f"{cell['mIoU']} [{s['mIoU']['min']:.3f}, {s['mIoU']['max']:.3f}]"
        classes = " | ".join(cell[f"iou/{c}"] for c in CLASS_NAMES)
        rows.append(f"| {experiment.name} | {len(results)} | {miou} | {classes} | {cell['accuracy']} "
                    f"| {s['train_minutes']:.1f} |")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=("run", "table"))
    parser.add_argument("experiments", nargs="*", help=f"(run) which settings: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--out", required=True, help="results folder: <out>/<experiment>/seed<N>/")
    parser.add_argument("--root", help="(run) dataset root with train/, test/ and test_labels/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", default="cmx_b0", help="(run) shipped config name or YAML path")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--folds", type=int, help="(run) k-fold cross-validation: one run per fold and seed")
    parser.add_argument("--init-from", help="(run) a release checkpoint to fine-tune from")
    parser.add_argument("--tag", default="", help="(run) appended to the results folder name, e.g. _imagenet")
    parser.add_argument("--split", choices=("val", "test"), default="test", help="(table) which scores")
    parser.add_argument(
        "--record", metavar="NAME", help="also write the runs and their summary to benchmarks/results/NAME.json"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="(run) one more config override for every run, e.g. --set optim.lr_head=2e-3")  # fmt: skip
    args = parser.parse_args()
    unknown = set(args.experiments) - set(EXPERIMENTS)
    if unknown:
        parser.error(f"unknown experiments {sorted(unknown)}; known: {', '.join(EXPERIMENTS)}")
    if args.task == "run":
        folds = range(args.folds) if args.folds else [None]
        results = [
            run_one(name, seed, fold, args) for name in args.experiments for seed in args.seeds for fold in folds
        ]
        for result in results:
            print(json.dumps(result["test"]), file=sys.stderr)
    else:  # the table's experiments: every finished run under --out
        results = [json.loads(f.read_text()) for f in sorted(Path(args.out).glob("*/seed*/result.json"))]
    if args.record:
        experiments = sorted({r["experiment"] for r in results})
        summary = {name: {split: summarise([r for r in results if r["experiment"] == name], split)
                          for split in ("val", "test")} for name in experiments}  # fmt: skip
        print(f"wrote {write_record(args.record, {'runs': results, 'summary': summary})}", file=sys.stderr)
    print(markdown(Path(args.out), args.split))


if __name__ == "__main__":
    main()
