"""`cloudseg evaluate`: a checkpoint (or an ensemble) scored on a split, as `predict` would run it."""

import json
import logging
from pathlib import Path

import torch

from cloudseg.config import PredictConfig
from cloudseg.data.dataset import CloudDataset, find_samples
from cloudseg.data.split import load_split
from cloudseg.errors import DataError
from cloudseg.files import atomic_path
from cloudseg.inference.predictor import Predictor
from cloudseg.metrics import class_names, confusion_metric, confusion_scores, flat_scores, format_table
from cloudseg.models.checkpoint import checkpoint_paths
from cloudseg.panels import PANEL_COLUMNS, PANEL_MARKS, grid, prediction_row, save_rgb
from cloudseg.plots import plot_confusion

log = logging.getLogger("cloudseg")


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
            raise DataError(f"{split}: expected val, train, test or a JSON list of names ({error})") from error
        if not isinstance(listed, list):
            raise DataError(f"{split}: a JSON {type(listed).__name__}; expected a list of names (a run's split: "
                            "--split val or --split train)")  # fmt: skip
        names = set(listed)
    chosen = [s for s in samples if s.name in names]
    if not chosen:
        raise DataError(f"{root}: no images of split {split!r}")
    return chosen


@torch.no_grad()
def evaluate(
    checkpoints: str | Path | list[str | Path],
    root: str | Path,
    split: str = "val",
    output: str | Path | None = None,
    panels: int = 0,
    cfg: PredictConfig | None = None,
    device: str | torch.device | None = None,
) -> dict:
    """Scores a release checkpoint, or the average of several (an ensemble), on a split, run as `predict` runs it
    with `cfg` (tiles, TTA, precision); writes metrics.json, confusion.png (and panels) to `output` (default:
    beside the run, or for an ensemble in the first run's parent folder)."""
    checkpoints = checkpoint_paths(checkpoints)
    root = Path(root)
    samples = evaluation_samples(checkpoints, root, split)
    predictor = Predictor.from_checkpoint(checkpoints, device, cfg)
    cfg, num_classes = predictor.cfg, predictor.release.config.model.num_classes
    names = class_names(num_classes)
    scored = Path(split).stem + ("" if cfg.tta == "none" else f"_tta-{cfg.tta}")
    run = checkpoints[0].parent.parent
    default = run / f"eval_{scored}" if len(checkpoints) == 1 else run.parent / f"eval_ensemble_{scored}"
    output = Path(output or default)
    dataset = CloudDataset(samples)
    confusion = confusion_metric(num_classes)
    rows = []
    for i in range(len(dataset)):
        sample = dataset[i]
        prediction = predictor.class_ids(sample["rgb"], sample["aux"]).cpu()
        confusion.update(prediction[None], sample["mask"][None].long())
        if i < panels:
            rows.append(prediction_row(sample, prediction.numpy()))
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
    }
    with atomic_path(output / "metrics.json") as temporary:
        temporary.write_text(json.dumps(result, indent=2) + "\n")
    plot_confusion(matrix.numpy(), names, output / "confusion.png")
    what = checkpoints[0].name if len(checkpoints) == 1 else f"the mean of {len(checkpoints)} checkpoints"
    if rows:
        named = "/".join(checkpoints[0].parts[-4:]) if len(checkpoints) == 1 else what
        title = f"{named} on {split} ({len(dataset)} images, TTA {cfg.tta}): mIoU {result['mIoU']:.3f}"
        save_rgb(output / "panels.png", grid(title, PANEL_COLUMNS, rows, PANEL_MARKS))
    log.info("%s on %d images of %s\n%s", what, len(dataset), split, format_table(scores, names))
    log.info("wrote %s and %s", output / "metrics.json", output / "confusion.png")
    return result
