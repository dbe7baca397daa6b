"""`cloudseg report`: the page opened in headless Chromium (Playwright), offline, with the numbers of metrics.json."""

import json
import shutil

import pytest
import torch

from cloudseg.cli.main import main
from cloudseg.config import Config, ModelConfig
from cloudseg.models import build_model
from cloudseg.models.checkpoint import add_to_header, save_release
from cloudseg.sections import to_dict


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, synth_root):
    torch.manual_seed(0)
    checkpoint = tmp_path_factory.mktemp("run") / "checkpoints" / "best.safetensors"
    save_release(build_model("cmx_b0").eval(), to_dict(Config(model=ModelConfig(name="cmx_b0"))), checkpoint)
    add_to_header(checkpoint, calibration={"method": "temperature", "temperature": [1.5]})
    folder = tmp_path_factory.mktemp("evaluation")
    arguments = ["evaluate", "--checkpoint", str(checkpoint), "--data.root", str(synth_root), "--split", "test"]
    assert main([*arguments, "--output", str(folder), "--report"]) == 0
    return folder


def test_the_report_opens_offline_and_shows_what_the_evaluation_measured(evaluation, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("the report's browser test needs Chromium: `apt-get install chromium` (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    metrics = json.loads((evaluation / "metrics.json").read_text())
    errors, fetched = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: fetched.append(request.url))
        page.goto((evaluation / "report.html").as_uri())
        page.wait_for_load_state("load")
        cells = page.eval_on_selector_all(
            "#classes tr", "rows => rows.slice(1).map(r => [...r.cells].map(c => c.textContent.trim()))"
        )
        loaded = page.eval_on_selector_all("img", "images => images.map(i => i.complete && i.naturalWidth > 0)")

        def names() -> list[str]:
            return page.eval_on_selector_all("#images tbody tr", "rows => rows.map(r => r.cells[0].textContent)")

        def column(index: int) -> list[float]:
            return page.eval_on_selector_all(
                "#images tbody tr", f"rows => rows.map(r => Number(r.cells[{index}].textContent))"
            )

        shown = names()
        page.click("#images th:nth-child(1)")
        by_name = names()
        page.click("#images th:nth-child(3)")  # accuracy
        by_accuracy = column(2)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert not errors
    assert all(url.startswith(("file:", "data:")) for url in fetched)  # nothing from the network
    assert [row[0] for row in cells] == metrics["classes"]
    for row, name in zip(cells, metrics["classes"], strict=True):
        assert row[1] == f"{metrics[f'iou/{name}']:.4f}" and row[2] == f"{metrics[f'dice/{name}']:.4f}"
    assert len(loaded) == 2 + metrics["images"] and all(loaded)  # reliability, confusion and each (worst) image
    assert sorted(shown) == by_name == sorted(by_name) and len(shown) == metrics["images"]
    assert by_accuracy == sorted(by_accuracy)
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_of_a_folder_without_an_evaluation_says_what_to_run(tmp_path, capsys, user_view):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither an evaluation folder (metrics.json) nor a run folder with one" in capsys.readouterr().err
