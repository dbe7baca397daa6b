"""`cloudseg report`: one self-contained HTML page of an evaluation (scores, confusion, calibration, the worst
images, the run's training curves and config) that opens offline: styles, script and images are inline."""

import base64
import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

import yaml

from cloudseg import __version__
from cloudseg.calibration import BINS
from cloudseg.errors import DataError
from cloudseg.files import atomic_path, file_sha256
from cloudseg.models.checkpoint import read_release
from cloudseg.plots import plot_curves, plot_learning_rates
from cloudseg.schema import CLASSES
from cloudseg.sections import to_dict

TEMPLATE = "report.html"


def evaluation_folder(path: str | Path) -> Path:
    """An evaluation folder as given, or a run folder's most recent one (`eval_*`, as `evaluate` writes them)."""
    path = Path(path)
    if not (path / "metrics.json").is_file():
        evaluations = sorted(path.glob("eval_*/metrics.json"), key=lambda p: p.stat().st_mtime)
        if not path.is_dir() or not evaluations:
            raise DataError(
                f"{path}: neither an evaluation folder (metrics.json) nor a run folder with one; run `cloudseg "
                "evaluate --checkpoint <run>/checkpoints/best.safetensors --data.root <root> --report` first"
            )
        path = evaluations[-1].parent
    if not (path / "images.csv").is_file():
        raise DataError(f"{path}: an evaluation from before reports (no images.csv); run `cloudseg evaluate` again")
    return path


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def history(rows: list[dict], names: list[str]) -> list[dict]:
    """metrics.csv's rows as `plot_curves` reads them: per epoch, its training loss and, where it validated, its
    validation loss, mIoU and class IoUs."""
    columns = {"train/loss_epoch": "train_loss", "val/loss": "val_loss", "val/mIoU": "mIoU"}
    columns |= {f"val/iou_{name}": f"iou/{name}" for name in names}
    epochs: dict[int, dict] = {}
    for row in rows:
        if row.get("epoch"):
            epoch = epochs.setdefault(int(row["epoch"]), {"epoch": int(row["epoch"])})
            epoch |= {key: float(row[column]) for column, key in columns.items() if row.get(column)}
    return [epochs[epoch] for epoch in sorted(epochs)]


def training_figures(run: Path, names: list[str]) -> dict[str, str]:
    """The run's curves and learning rates, drawn from its metrics.csv, as inline PNGs."""
    if not (run / "metrics.csv").is_file():
        return {}
    with (run / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    figures, curves, rates = {}, io.BytesIO(), io.BytesIO()
    if epochs := history(rows, names):
        plot_curves(epochs, tuple(names), curves, f"{run.parent.name}/{run.name}: metrics.csv")
        figures["curves"] = data_uri(curves.getvalue())
    if plot_learning_rates(rows, rates):
        figures["learning_rates"] = data_uri(rates.getvalue())
    return figures


def report_context(folder: Path) -> dict:
    """Everything the page shows, read from the evaluation folder and, for one checkpoint, from its run."""
    metrics = json.loads((folder / "metrics.json").read_text())
    names, matrix = metrics["classes"], metrics["confusion"]
    total = sum(map(sum, matrix))
    classes = [
        {
            "name": name,
            "colour": "#{:02x}{:02x}{:02x}".format(*CLASSES[i].rgb) if i < len(CLASSES) else "#808080",
            "shares": [count / max(sum(row), 1) for count in row],
            "pixel_share": sum(row) / max(total, 1),
            **{key: metrics.get(f"{key}/{name}") for key in ("iou", "dice", "precision", "recall")},
        }
        for i, (name, row) in enumerate(zip(names, matrix, strict=True))
    ]
    with (folder / "images.csv").open(newline="") as handle:
        images = sorted(csv.DictReader(handle), key=lambda row: float(row["mIoU"] or "inf"))  # worst first
    for image in images:  # four decimals on the page; images.csv keeps every digit
        image.update({k: f"{float(v):.4f}" for k, v in image.items() if k not in ("name", "pixels") and v})
    figures = {name: data_uri((folder / name).read_bytes()) for name in ("confusion.png", "reliability.png")}
    checkpoints = [Path(path) for path in metrics["checkpoints"]]
    release = None
    if len(checkpoints) == 1 and checkpoints[0].is_file():  # an ensemble's members each have their own run
        release, run = read_release(checkpoints[0]), checkpoints[0].parent.parent
        figures |= training_figures(run, names)
        calibration = checkpoints[0].with_name(f"{checkpoints[0].stem}_calibration.png")
        if calibration.is_file():
            figures["calibration"] = data_uri(calibration.read_bytes())
    return {
        "title": "/".join(checkpoints[0].parts[-4:]) if len(checkpoints) == 1 else f"an ensemble of {len(checkpoints)}",
        "metrics": metrics,
        "bins": BINS,
        "classes": classes,
        "matrix": matrix,
        "images": images,
        "score_columns": [key for key in images[0] if key != "name"] if images else [],
        "worst": [
            {"name": p.stem.partition("_")[2], "src": data_uri(p.read_bytes())}
            for p in sorted(folder.glob("worst/*.png"))
        ],
        "figures": figures,
        "checkpoints": [
            {"path": str(c), "sha256": file_sha256(c) if c.is_file() else "(not found)"} for c in checkpoints
        ],
        "training": release.info.get("calibration") if release else None,
        "best": {"epoch": release.info.get("epoch"), "metrics": release.info.get("metrics")} if release else None,
        "config": yaml.safe_dump(to_dict(release.config), sort_keys=False) if release else None,
        "version": __version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_report(evaluation: str | Path, output: str | Path | None = None) -> Path:
    """Writes the evaluation's report, `report.html` in its folder unless `output` names another file."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    folder = evaluation_folder(evaluation)
    environment = Environment(loader=PackageLoader("cloudseg.inference"), autoescape=select_autoescape())
    page = environment.get_template(TEMPLATE).render(**report_context(folder))
    output = Path(output) if output else folder / "report.html"
    with atomic_path(output) as temporary:
        temporary.write_text(page, encoding="utf-8")
    return output
