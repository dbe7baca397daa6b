"""`cloudseg report`: the page opened in headless Chromium (Playwright), offline, with the numbers of metrics.json."""

import csv
import json
import shutil

import pytest
import torch

from cloudseg.cli.main import main
from cloudseg.config import Config, ModelConfig
from cloudseg.models import build_model
from cloudseg.models.checkpoint import add_to_header, save_release
from cloudseg.sections import to_dict

METRICS_CSV = """epoch,step,lr-AdamW/encoder,train/loss_epoch,val/loss,val/mIoU,val/iou_clear
,1,0.0001,,,,
0,2,,1.5,1.4,0.2,0.3
,3,0.00005,,,,
1,4,,1.2,1.1,0.3,0.4
"""


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, synth_root):
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("run")
    checkpoint = run / "checkpoints" / "best.safetensors"
    save_release(build_model("cmx_b0").eval(), to_dict(Config(model=ModelConfig(name="cmx_b0"))), checkpoint)
    add_to_header(checkpoint, calibration={"method": "temperature", "temperature": [1.5]})
    (run / "metrics.csv").write_text(METRICS_CSV)
    folder = tmp_path_factory.mktemp("evaluation")
    arguments = ["evaluate", "--checkpoint", str(checkpoint), "--data.root", str(synth_root), "--split", "test"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cloudseg.inference.evaluate.WORST_IMAGES", 1)  # of the 2 test images: the heap must choose
        assert main([*arguments, "--output", str(folder), "--report"]) == 0
    return folder


def test_the_worst_images_are_those_of_the_lowest_miou(evaluation):
    with (evaluation / "images.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and rows[0]["mIoU"] != rows[1]["mIoU"]
    worst = min(rows, key=lambda row: float(row["mIoU"]))
    assert [p.name for p in (evaluation / "worst").iterdir()] == [f"00_{worst['name']}.png"]


def test_the_report_opens_offline_and_shows_what_the_evaluation_measured(evaluation, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("the report's browser test needs Chromium: `apt-get install chromium` (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    metrics = json.loads((evaluation / "metrics.json").read_text())
    errors, fetched = [], []
    table = "rows => rows.slice(1).map(r => [...r.cells].map(c => c.textContent.trim()))"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: fetched.append(request.url))
        page.goto((evaluation / "report.html").as_uri())
        page.wait_for_load_state("load")
        classes = page.eval_on_selector_all("#classes tr", table)
        counts = page.eval_on_selector_all("#confusion-counts tr", table)
        loaded = page.eval_on_selector_all("img", "images => images.map(i => i.complete && i.naturalWidth > 0)")

        def names() -> list[str]:
            return page.eval_on_selector_all("#images tbody tr", "rows => rows.map(r => r.cells[0].textContent)")

        shown = names()
        page.click("#images th:nth-child(1)")
        ascending = names()
        page.click("#images th:nth-child(1)")
        descending = names()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert not errors
    assert all(url.startswith(("file:", "data:")) for url in fetched)  # nothing from the network
    total = sum(map(sum, metrics["confusion"]))
    for row, name, true_row in zip(classes, metrics["classes"], metrics["confusion"], strict=True):
        expected = [f"{metrics[f'{key}/{name}']:.4f}" if metrics[f"{key}/{name}"] is not None else "\u2013"
                    for key in ("iou", "dice", "precision", "recall")]  # fmt: skip
        assert row == [name, *expected, f"{100 * sum(true_row) / total:.2f}%"]
    assert [[int(c.replace(",", "")) for c in row[1:]] for row in counts] == metrics["confusion"]
    assert len(loaded) == 5 and all(loaded)  # reliability, confusion, curves, learning rates, the worst image
    with (evaluation / "images.csv").open(newline="") as handle:
        by_miou = [row["name"] for row in sorted(csv.DictReader(handle), key=lambda row: float(row["mIoU"]))]
    assert shown == by_miou  # worst first
    assert ascending == sorted(shown) and descending == sorted(shown, reverse=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_of_a_folder_without_an_evaluation_says_what_to_run(tmp_path, capsys, user_view):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither an evaluation folder (metrics.json) nor a run folder with one" in capsys.readouterr().err
