"""`cloudseg demo`: the whole path on synthetic scenes, on a laptop CPU: data, training, evaluation, sliding-window
prediction, a Kaggle submission and its score."""

import json
import shutil
import time
from pathlib import Path

from cloudseg.config import PredictConfig, load_config
from cloudseg.data.synth import synthesize
from cloudseg.files import atomic_path
from cloudseg.inference.evaluate import evaluate
from cloudseg.inference.predict import predict
from cloudseg.inference.rle import score_submission
from cloudseg.training.run import train

# (train scenes, test scenes, size, epochs, tile): `full` reaches mean IoU > 0.6 in under 10 minutes on 2 cores.
SETTINGS = {"full": (64, 16, 256, 15, 192), "fast": (12, 4, 128, 3, 96)}


def run_demo(output: str | Path = "cloudseg-demo", fast: bool = False) -> dict:
    started = time.perf_counter()
    output = Path(output)
    n_train, n_test, size, epochs, tile = SETTINGS["fast" if fast else "full"]
    print(f"1/5 synthetic scenes: {n_train} train + {n_test} test, {size}x{size}")
    data = synthesize(output / "data", n_train, n_test, size, seed=0, overwrite=True)
    overrides = [
        f"data.root={data}",
        f"data.augment.crop_size={min(size, 256)}",
        f"trainer.max_epochs={epochs}",
        f"run.output_dir={output / 'runs'}",
        "run.name=demo",
    ]
    print(f"2/5 training cmx_b0 for {epochs} epochs on the CPU")
    run_dir = train(load_config("cmx_b0", overrides))
    best = run_dir / "checkpoints" / "best.safetensors"
    print("3/5 evaluating the best checkpoint on the test scenes")
    evaluate(best, data, "test", output / "evaluation", panels=4, report=True)
    print(f"4/5 predicting the test scenes in {tile}x{tile} tiles, writing the submission")
    submission = output / "submission.csv"
    shutil.rmtree(output / "masks", ignore_errors=True)  # an earlier demo's masks, of other scenes, would stay
    predict(best, data, output / "masks", PredictConfig(tile=tile, overlap=tile // 3), submission)
    print("5/5 scoring the submission against the held-apart test labels")
    scores = score_submission(submission, data / "test_labels")
    with atomic_path(output / "score.json") as temporary:
        temporary.write_text(json.dumps(scores, indent=2) + "\n")
    minutes = (time.perf_counter() - started) / 60
    print(
        f"\ndone in {minutes:.1f} min: test mean IoU {scores['mIoU']:.3f}, mean Dice per image "
        f"{scores['mean_image_dice']:.3f}\n"
        f"  run folder (checkpoints, curves.png, panels/): {run_dir}\n"
        f"  evaluation (report.html, metrics.json, figures, panels.png): {output / 'evaluation'}\n"
        f"  predicted masks: {output / 'masks'}\n  submission: {submission} (its scores: {output / 'score.json'})"
    )
    return scores
