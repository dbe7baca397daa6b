"""`cloudseg evaluate`: a checkpoint (or an ensemble) scored on a split, as `predict` would run it."""

import csv
import hashlib
import heapq
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from cloudseg.calibration import BINS, ReliabilityBins
from cloudseg.config import PredictConfig
from cloudseg.data.dataset import CloudDataset, find_samples
from cloudseg.data.split import load_split
from cloudseg.errors import DataError
from cloudseg.files import atomic_path
from cloudseg.inference.engine import uncertainty_map
from cloudseg.inference.predictor import Predictor
from cloudseg.inference.report import write_report
from cloudseg.metrics import (
    class_ids,
    class_names,
    confusion_metric,
    confusion_scores,
    flat_scores,
    format_table,
    image_scores,
)
from cloudseg.models.checkpoint import checkpoint_paths
from cloudseg.panels import PANEL_COLUMNS, PANEL_MARKS, grid, prediction_row, save_rgb
from cloudseg.plots import plot_confusion, plot_reliability

log = logging.getLogger("cloudseg")


WORST_IMAGES = 12  # drawn in worst/ (and the report): the images of the lowest mIoU


def evaluation_samples(checkpoints: list[Path], root: Path, split: str) -> list:
    """The samples of `split`: val or train (the runs' saved split, which must be one split for all the
    checkpoints), test (test/ with test_labels/), or a JSON list file of names from train/."""
    if split == "test":
        return find_samples(root / "test", root / "test_labels")
    samples = find_samples(root / "train", root / "train" / "label")
    if split in ("val", "train"):
        all_names, splits = [s.name for s in samples], set()
        for checkpoint in checkpoints:
            split_file = checkpoint.parent.parent / "split.json"
            if not split_file.is_file():
                raise DataError(f"{split_file}: the run's split is missing; pass a list file with --split <file.json>")
            splits.add(getattr(load_split(split_file, all_names), split))
        if len(splits) > 1:
            raise DataError(
                f"the checkpoints come from runs with different {split} splits (k folds?), so there is no one "
                f"{split} split to score them on: use --split test or a JSON list file of names"
            )
        names = set(splits.pop())
    else:
        path = Path(split)
        try:
            listed = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DataError(f"{split}: expected val, train, test or a JSON file listing names ({error})") from error
        if not isinstance(listed, list):
            raise DataError(f"{split}: a JSON {type(listed).__name__}; expected a list of names (a run's split: "
                            "--split val or --split train)")  # fmt: skip
        names = set(listed)
    chosen = [s for s in samples if s.name in names]
    if not chosen:
        raise DataError(f"{root}: no images of split {split!r}")
    return chosen


class WorstImages:
    """The `count` images of the lowest mIoU so far, with their prediction and uncertainty, for worst/: a heap
    whose top is the best of them, the one to drop for a worse image."""

    def __init__(self, count: int):
        self.count, self.heap = count, []

    def offer(self, index: int, miou: float | None, prediction: torch.Tensor, probabilities: torch.Tensor) -> None:
        if miou is None or (len(self.heap) == self.count and -miou <= self.heap[0][0]):
            return  # no labelled pixel, or not among the worst
        entry = (-miou, index, prediction.byte().numpy(), uncertainty_map(probabilities, "entropy").numpy())
        (heapq.heappush if len(self.heap) < self.count else heapq.heappushpop)(self.heap, entry)

    def write(self, dataset: CloudDataset, folder: Path) -> None:
        """`folder/NN_<name>.png`, worst first: RGB | NIR | truth | prediction | errors | uncertainty."""
        shutil.rmtree(folder, ignore_errors=True)  # an earlier evaluation's images would mix in
        for rank, (_, index, prediction, entropy) in enumerate(sorted(self.heap, reverse=True)):
            sample = dataset[index]
            caption, tiles = prediction_row(sample, prediction)
            row = [("", [*tiles, np.dstack([entropy] * 3)])]
            picture = grid(caption, [*PANEL_COLUMNS, "uncertainty"], row, PANEL_MARKS, tile=128)
            save_rgb(folder / f"{rank:02d}_{sample['name']}.png", picture)


def write_image_scores(rows: list[dict], path: Path) -> None:
    """One line per image: its name, pixel accuracy, mIoU and per-class IoU (empty where a class has none)."""
    keys = ["name", "pixels", "accuracy", "mIoU", *(k for k in rows[0] if k.startswith("iou/"))]
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@torch.no_grad()
def default_folder(checkpoints: list[Path], scored: str) -> Path:
    """`eval_<scored>` in a checkpoint's run folder (`eval_<stem>_<scored>` for one other than best.safetensors);
    for an ensemble, `eval_ensemble-<digest of its members>_<scored>` beside the first run's folder, so that no
    evaluation replaces another's."""
    run = checkpoints[0].parent.parent
    if len(checkpoints) == 1:
        stem = checkpoints[0].stem
        return run / (f"eval_{scored}" if stem == "best" else f"eval_{stem}_{scored}")
    members = "\n".join(sorted(str(path.resolve()) for path in checkpoints))
    return run.parent / f"eval_ensemble-{hashlib.sha256(members.encode()).hexdigest()[:8]}_{scored}"


def evaluate(
    checkpoints: str | Path | list[str | Path],
    root: str | Path,
    split: str = "val",
    output: str | Path | None = None,
    panels: int = 0,
    cfg: PredictConfig | None = None,
    device: str | torch.device | None = None,
    report: bool = False,
) -> dict:
    """Scores a release checkpoint, or the average of several (an ensemble), on a split, run as `predict` runs it
    with `cfg` (tiles, TTA, precision); writes metrics.json, images.csv (each image's scores), confusion.png,
    reliability.png, worst/ (the WORST_IMAGES lowest mIoUs), panels.png and report.html if asked, to `output`
    (default: beside the run, or for an ensemble in the first run's parent folder)."""
    checkpoints = checkpoint_paths(checkpoints)
    root = Path(root)
    samples = evaluation_samples(checkpoints, root, split)
    predictor = Predictor.from_checkpoint(checkpoints, device, cfg)
    cfg, num_classes = predictor.cfg, predictor.release.config.model.num_classes
    names = class_names(num_classes)
    scored = Path(split).stem + ("" if cfg.tta == "none" else f"_tta-{cfg.tta}")
    output = Path(output or default_folder(checkpoints, scored))
    dataset = CloudDataset(samples)
    confusion = confusion_metric(num_classes)
    rows, per_image, worst = [], [], WorstImages(WORST_IMAGES)
    # How well the probabilities are calibrated; for one checkpoint with a temperature, also without it.
    temperature = predictor.release.temperature if cfg.calibrated and len(checkpoints) == 1 else None
    reliability, uncalibrated = ReliabilityBins(), ReliabilityBins()
    for i in range(len(dataset)):
        sample = dataset[i]
        logits = predictor.logits(sample["rgb"], sample["aux"]).float().cpu()
        prediction, target = class_ids(logits, dim=-3), sample["mask"][None].long()
        confusion.update(prediction[None], target)
        probabilities = logits.softmax(0)
        reliability.update(probabilities[None], target)
        if temperature:
            uncalibrated.update((logits * torch.tensor(temperature).view(-1, 1, 1)).softmax(0)[None], target)
        if i < panels:
            rows.append(prediction_row(sample, prediction.numpy()))
        image = {"name": sample["name"], **image_scores(prediction, sample["mask"], names)}
        per_image.append(image)
        worst.offer(i, image["mIoU"], prediction, probabilities)
    matrix = confusion.compute().cpu()
    scores = confusion_scores(matrix)
    result = {
        "checkpoints": [str(c) for c in checkpoints],
        "root": str(root),
        "split": split,
        "tta": cfg.tta,
        "images": len(dataset),
        **flat_scores(scores, names),
        "confusion": matrix.tolist(),
        "classes": list(names),
        "calibrated": cfg.calibrated,
        "ece": reliability.ece(),
        "reliability": reliability.as_dict()["bins"],
        "temperature": list(temperature) if temperature else None,
        **({"ece_uncalibrated": uncalibrated.ece()} if temperature else {}),
    }
    with atomic_path(output / "metrics.json") as temporary:
        temporary.write_text(json.dumps(result, indent=2) + "\n")
    plot_confusion(matrix.numpy(), names, output / "confusion.png")
    write_image_scores(per_image, output / "images.csv")
    worst.write(dataset, output / "worst")
    shown = {"uncalibrated": uncalibrated, "calibrated": reliability} if temperature else {"probabilities": reliability}
    plot_reliability(shown, output / "reliability.png", f"probabilities on {split} ({len(dataset)} images)")
    what = checkpoints[0].name if len(checkpoints) == 1 else f"the mean of {len(checkpoints)} checkpoints"
    if rows:
        named = "/".join(checkpoints[0].parts[-4:]) if len(checkpoints) == 1 else what
        title = f"{named} on {split} ({len(dataset)} images, TTA {cfg.tta}): mIoU {result['mIoU']:.3f}"
        save_rgb(output / "panels.png", grid(title, PANEL_COLUMNS, rows, PANEL_MARKS))
    log.info("%s on %d images of %s\n%s", what, len(dataset), split, format_table(scores, names))
    before = f" (uncalibrated {uncalibrated.ece():.4f})" if temperature else ""
    log.info("expected calibration error (ECE, %d bins) %.4f%s", BINS, reliability.ece(), before)
    log.info("wrote %s, %s and %s", *(output / name for name in ("metrics.json", "confusion.png", "reliability.png")))
    if report:
        log.info("wrote %s", write_report(output))
    return result
