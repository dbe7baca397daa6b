"""`cloudseg report`: one self-contained HTML page of an evaluation (scores, confusion, calibration, the worst
images, the run's training curves and config) that opens offline: styles, script and images are inline."""

import base64
import csv
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import yaml

from cloudseg import __version__
from cloudseg.errors import DataError
from cloudseg.files import atomic_path
from cloudseg.models.checkpoint import read_release
from cloudseg.schema import CLASSES
from cloudseg.sections import to_dict

TEMPLATE = "report.html"


def evaluation_folder(path: str | Path) -> Path:
    """An evaluation folder as given, or a run folder's most recent one (`eval_*`, as `evaluate` writes them)."""
    path = Path(path)
    if (path / "metrics.json").is_file():
        return path
    evaluations = sorted(path.glob("eval_*/metrics.json"), key=lambda p: p.stat().st_mtime)
    if not path.is_dir() or not evaluations:
        raise DataError(
            f"{path}: neither an evaluation folder (metrics.json) nor a run folder with one; run "
            "`cloudseg evaluate --checkpoint <run>/checkpoints/best.safetensors --data.root <root> --report` first"
        )
    return evaluations[-1].parent


def inline_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def learning_rates(metrics_csv: Path) -> str | None:
    """The learning rates logged in a run's metrics.csv against the step, as an inline PNG (None: none logged)."""
    from cloudseg.plots import learning_rate_png

    with metrics_csv.open(newline="") as handle:
        png = learning_rate_png(list(csv.DictReader(handle)))
    return "data:image/png;base64," + base64.b64encode(png).decode() if png else None


def report_context(folder: Path) -> dict:
    """Everything the page shows, read from the evaluation folder and, through its checkpoint, the run."""
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
    checkpoint = Path(metrics["checkpoints"][0])
    run = checkpoint.parent.parent
    release = read_release(checkpoint) if checkpoint.is_file() else None
    figures = {name: inline_png(folder / name) for name in ("confusion.png", "reliability.png")}
    beside = {"curves": run / "curves.png", "calibration": checkpoint.with_name(f"{checkpoint.stem}_calibration.png")}
    for name, path in beside.items():
        if path.is_file():
            figures[name] = inline_png(path)
    if (run / "metrics.csv").is_file() and (rates := learning_rates(run / "metrics.csv")):
        figures["learning_rates"] = rates
    return {
        "metrics": metrics,
        "classes": classes,
        "matrix": matrix,
        "images": images,
        "score_columns": [key for key in images[0] if key != "name"] if images else [],
        "worst": [{"name": p.stem.partition("_")[2], "src": inline_png(p)} for p in sorted(folder.glob("worst/*.png"))],
        "figures": figures,
        "checkpoints": [
            {"path": path, "sha256": sha256(Path(path)) if Path(path).is_file() else "(not found)"}
            for path in metrics["checkpoints"]
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
