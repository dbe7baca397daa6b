"""How to average an ensemble: the mean of the members' logits (what `cloudseg predict` and `evaluate` do) against
the mean of their probabilities, each member alone beside them, on a split the choice may be made on.

    python benchmarks/ensembling.py --root ../shared/data/l8biome --split val \
        --ensemble seeds <seed0 best.safetensors> <seed1 ...> <seed2 ...> [--ensemble NAME ...] [--record NAME]

`--split val` scores the members' common validation split (runs of one `data.split_seed`); the test split is for
the final model only. Each member is the product's predictor (its checkpoint's normalisation and temperature).
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from records import add_record_options, report

from cloudseg.data.dataset import to_chw
from cloudseg.data.io import read_sample
from cloudseg.inference.evaluate import evaluation_samples
from cloudseg.inference.predictor import Predictor
from cloudseg.metrics import class_ids, confusion_counts, confusion_scores, flat_scores
from cloudseg.models.checkpoint import checkpoint_paths
from cloudseg.schema import CLASS_NAMES


def confusion(truth: np.ndarray, prediction: torch.Tensor) -> torch.Tensor:
    return confusion_counts(prediction, torch.from_numpy(truth), len(CLASS_NAMES))


MEANS = {
    "logit_mean": lambda logits: logits.mean(0),
    "probability_mean": lambda logits: logits.softmax(1).mean(0),
}


def compare(paths: list[Path], root: Path, split: str, means: list[str]) -> dict:
    """Scores of each member and of each of `means` of them over `split`'s images."""
    members = [Predictor.from_checkpoint(path, "cpu") for path in paths]
    totals = {"members": [0] * len(members)} | dict.fromkeys(means, 0)
    samples = evaluation_samples(paths, root, split)
    for files in samples:
        rgb, nir, truth = read_sample(files)
        logits = torch.stack([member.logits(to_chw(rgb), to_chw(nir)).float() for member in members])  # (M, K, H, W)
        for index, member_logits in enumerate(logits):
            totals["members"][index] = totals["members"][index] + confusion(truth, class_ids(member_logits, 0))
        for mean in means:
            totals[mean] += confusion(truth, class_ids(MEANS[mean](logits), 0))
    scored = [
        {"checkpoint": str(p), **flat_scores(confusion_scores(c))}
        for p, c in zip(paths, totals["members"], strict=True)
    ]
    return {"images": len(samples), "members": scored} | {m: flat_scores(confusion_scores(totals[m])) for m in means}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="dataset root")
    parser.add_argument("--split", default="val", help="val (the members' common split), train, or test")
    parser.add_argument("--ensemble", nargs="+", action="append", required=True, metavar=("NAME", "CHECKPOINT"),
                        help="a name, then the members' checkpoints; repeatable")  # fmt: skip
    parser.add_argument("--means", nargs="+", choices=MEANS, default=list(MEANS),
                        help="which averages to score (on test: only the one chosen on validation)")  # fmt: skip
    add_record_options(parser)
    args = parser.parse_args()
    results = {
        name: compare(checkpoint_paths(paths), args.root, args.split, args.means) for name, *paths in args.ensemble
    }
    report({"split": args.split, "ensembles": results}, args)


if __name__ == "__main__":
    main()
