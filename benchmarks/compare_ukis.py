"""cloudseg beside ukis-csmask (Apache-2.0; bundled ONNX U-Net cloud and shadow models) on the same inputs.

    pip install "ukis-csmask[cpu]==1.0.0"
    python benchmarks/compare_ukis.py speed --checkpoint runs/.../best.safetensors [--onnx model.onnx]
    python benchmarks/compare_ukis.py scene --checkpoint runs/.../best.safetensors --size 6000  # one big scene
    python benchmarks/compare_ukis.py accuracy --root ../shared/data/l8biome --model cmx_b0 <seed0 ckpt> <seed1 ckpt> \
        [--model segformer_b0 <ckpt> ...] [--ensemble folds <fold0 ckpt> <fold1 ckpt> ...]
    python benchmarks/compare_ukis.py panels --root ../shared/data/l8biome --model cmx_b0 <ckpt> --model rgb <ckpt> \
        -o docs/panels.png

Input scaling: ukis-csmask expects top-of-atmosphere reflectance (float32, 0..1) in blue, green, red, NIR order
and normalises it itself. cloudseg expects the 8-bit images of the dataset format. Both get the same scene:
`speed` builds one 512² synthetic scene in reflectance and gives cloudseg its 8-bit encoding; `accuracy` reads the
8-bit test patches and gives ukis-csmask their reflectance, by inverting the square-root stretch the patches were
made with (`r = (v / 255)²`, see the dataset's SOURCES.md). Classes are compared where both have them: clear,
cloud (thick or thin), cloud shadow; the scores come from cloudseg's own metric code.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from records import add_record_options, report

from cloudseg.data.dataset import find_samples, model_inputs, to_chw
from cloudseg.data.io import read_sample
from cloudseg.data.synth import make_scene, write_pair
from cloudseg.inference.predictor import Predictor
from cloudseg.metrics import confusion_scores
from cloudseg.panels import colourise, grid, save_rgb
from cloudseg.schema import encode_reflectance

MERGED = ("clear", "cloud", "cloud_shadow")
CLOUDSEG_TO_MERGED = np.array([0, 1, 1, 2], dtype=np.uint8)  # clear, thick, thin, shadow -> clear, cloud, shadow
UKIS_BANDS = ["blue", "green", "red", "nir"]


def ukis_mask(reflectance_bgrn: np.ndarray) -> np.ndarray:
    """ukis-csmask's 4-band L1C model: (H, W) ids 0 clear, 1 cloud, 2 cloud shadow."""
    from ukis_csmask.mask import CSmask

    return CSmask(reflectance_bgrn.astype(np.float32), band_order=UKIS_BANDS, product_level="l1c").csm[..., 0]


def pixels(rgb: np.ndarray, nir: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, C) uint8 arrays -> (1, C, H, W) uint8 tensors, as the dataset serves a pair."""
    return to_chw(rgb)[None], to_chw(nir)[None]


def timed(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def speed(args: argparse.Namespace) -> dict:
    image, _ = make_scene(np.random.default_rng(0), 512)  # (512, 512, 4) reflectance: R, G, B, NIR
    encoded = encode_reflectance(image)
    rgb, aux = pixels(encoded[..., :3], encoded[..., 3:])
    fp32 = Predictor.from_checkpoint(args.checkpoint, "cpu", precision="32")
    bf16 = Predictor.from_checkpoint(args.checkpoint, "cpu", precision="bf16")
    results = {
        "cloudseg_pytorch_s": timed(lambda: fp32.logits(rgb, aux), args.repeats),
        "cloudseg_pytorch_bf16_s": timed(lambda: bf16.logits(rgb, aux), args.repeats),
        "ukis_csmask_4b_s": timed(lambda: ukis_mask(image[..., [2, 1, 0, 3]]), args.repeats),
    }
    if args.onnx:
        import onnxruntime

        session = onnxruntime.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
        feed = dict(zip(("rgb", "aux"), (t.numpy() for t in model_inputs(rgb, aux)), strict=True))
        results["cloudseg_onnx_s"] = timed(lambda: session.run(None, feed), args.repeats)
    results.update({key.replace("_s", "_images_per_s"): 1.0 / value for key, value in list(results.items())})
    return {"size": 512, "threads": torch.get_num_threads(), "repeats": args.repeats, **results}


def scene(args: argparse.Namespace) -> dict:
    """One synthetic SIZE² scene end to end: `cloudseg predict` as a user runs it (start-up, reading the PNG pair,
    sliding windows, writing the mask), once per `--variant` of its options, beside ukis-csmask's `CSmask` on the
    same scene as reflectance, in one run."""
    import shlex
    import subprocess
    import sys
    import tempfile

    image, _ = make_scene(np.random.default_rng(0), args.size)  # (S, S, 4) reflectance: R, G, B, NIR
    megapixels = args.size**2 / 1e6
    results = {"size": args.size, "megapixels": megapixels, "cloudseg_predict_s": {}}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_pair(root, "scene.png", image)
        for variant in args.variant or [""]:
            command = [sys.executable, "-m", "cloudseg", "predict", "--checkpoint", args.checkpoint, "--input",
                       str(root), "--output", str(root / "masks"), "--overwrite", *shlex.split(variant)]  # fmt: skip
            started = time.perf_counter()
            subprocess.run(command, check=True)
            results["cloudseg_predict_s"][variant or "defaults"] = time.perf_counter() - started
    started = time.perf_counter()
    ukis_mask(image[..., [2, 1, 0, 3]])
    results["ukis_csmask_s"] = time.perf_counter() - started
    results["cloudseg_megapixels_per_s"] = {k: megapixels / s for k, s in results["cloudseg_predict_s"].items()}
    results["ukis_csmask_megapixels_per_s"] = megapixels / results["ukis_csmask_s"]
    return results


def merged_confusion(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    return np.bincount(truth.ravel() * 3 + prediction.ravel(), minlength=9).reshape(3, 3)


def scores(confusion: np.ndarray) -> dict:
    result = confusion_scores(torch.from_numpy(confusion))
    return {"mIoU": float(result["mIoU"]), "accuracy": float(result["accuracy"]),
            **{f"iou/{c}": float(v) for c, v in zip(MERGED, result["iou"], strict=True)}}  # fmt: skip


def test_patches(root: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, RGB, NIR, class ids) of every labelled test patch."""
    return [(files.name, *read_sample(files)) for files in find_samples(root / "test", root / "test_labels")]


def ukis_on_patch(rgb: np.ndarray, nir: np.ndarray) -> np.ndarray:
    reflectance = (np.dstack((rgb[..., ::-1], nir)).astype(np.float32) / 255.0) ** 2  # B, G, R, NIR
    return ukis_mask(reflectance)


def cloudseg_on_patches(checkpoints: str | list[str], patches: list) -> list[np.ndarray]:
    """Four-class id maps of each patch, by one checkpoint or the mean of several."""
    predictor = Predictor.from_checkpoint(checkpoints, "cpu")
    return [predictor.class_ids(*pixels(rgb, nir))[0].numpy().astype(np.uint8) for _, rgb, nir, _ in patches]


def model_runs(args: argparse.Namespace) -> dict[str, list]:
    """Each --model's checkpoints as runs of their own (seeds); each --ensemble's checkpoints as one run, their
    mean."""
    runs = {name: checkpoints for name, *checkpoints in args.model or []}
    return runs | {name: [checkpoints] for name, *checkpoints in args.ensemble or []}


def accuracy(args: argparse.Namespace) -> dict:
    """Shared-class scores of ukis-csmask and of each model; a model given several checkpoints (seeds) also gets
    the mean and standard deviation over them."""
    patches = test_patches(Path(args.root))
    truths = [CLOUDSEG_TO_MERGED[ids] for *_, ids in patches]
    ukis = sum(merged_confusion(CLOUDSEG_TO_MERGED[ids], ukis_on_patch(rgb, nir)) for _, rgb, nir, ids in patches)
    report = {"images": len(patches), "classes": list(MERGED), "ukis_csmask": scores(ukis)}
    for name, checkpoints in model_runs(args).items():
        runs = []
        for checkpoint in checkpoints:
            predictions = cloudseg_on_patches(checkpoint, patches)
            pairs = zip(truths, predictions, strict=True)
            confusion = sum(merged_confusion(truth, CLOUDSEG_TO_MERGED[ids]) for truth, ids in pairs)
            runs.append({"checkpoint": checkpoint, **scores(confusion)})
        keys = [k for k in runs[0] if k != "checkpoint"]
        report[name] = {
            "runs": runs,
            "mean": {k: float(np.mean([r[k] for r in runs])) for k in keys},
            "std": {k: float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else 0.0 for k in keys},
        }
    return report


def panels(args: argparse.Namespace) -> dict:
    """RGB | NIR | label | each model's first checkpoint (an ensemble's mean) | ukis-csmask, one row per test patch;
    ukis-csmask's cloud is drawn in the thick-cloud colour, as it has one cloud class."""
    patches = test_patches(Path(args.root))
    chosen = [p for p in patches if not args.names or p[0] in args.names]
    predictions = {name: cloudseg_on_patches(checkpoints[0], chosen) for name, checkpoints in model_runs(args).items()}
    ukis_to_ids = np.array([0, 1, 3], dtype=np.uint8)  # clear, cloud, shadow -> display ids
    rows = []
    for i, (_, rgb, nir, ids) in enumerate(chosen):
        row = [rgb, np.repeat(nir.reshape(*ids.shape, 1), 3, axis=2), colourise(ids)]
        row += [colourise(maps[i]) for maps in predictions.values()]
        rows.append((chosen[i][0], [*row, colourise(ukis_to_ids[ukis_on_patch(rgb, nir)])]))
    titles = ["RGB", "NIR", "label", *predictions, "ukis-csmask"]
    title = f"test patches of {args.root}: label, each model, ukis-csmask"
    save_rgb(args.output, grid(title, titles, rows, tile=args.tile))
    return {"output": args.output, "patches": [p[0] for p in chosen], "columns": titles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=("speed", "scene", "accuracy", "panels"))
    parser.add_argument("--checkpoint", help="(speed, scene) a cloudseg best.safetensors")
    parser.add_argument("--size", type=int, default=6000, help="(scene) the scene's side in pixels")
    parser.add_argument("--variant", action="append", help="(scene) predict's options for one run, e.g. "
                        "'--predict.runtime onnx'; repeat for more (default: one run with the defaults)")  # fmt: skip
    parser.add_argument("--model", nargs="+", action="append", metavar=("NAME", "CHECKPOINT"),
                        help="(accuracy, panels) a name, then one or more checkpoints (seeds); repeatable")  # fmt: skip
    parser.add_argument("--ensemble", nargs="+", action="append", metavar=("NAME", "CHECKPOINT"),
                        help="(accuracy, panels) a name, then checkpoints scored as one model, their mean")  # fmt: skip
    parser.add_argument("--onnx", help="(speed) the same model exported with `cloudseg export`")
    parser.add_argument("--root", help="(accuracy) dataset root with test/ and test_labels/")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--names", nargs="+", help="(panels) which test patches; default all")
    parser.add_argument("--tile", type=int, default=192, help="(panels) tile size in the picture")
    parser.add_argument("-o", "--output", default="panels.png", help="(panels) the PNG to write")
    add_record_options(parser)
    args = parser.parse_args()
    task = {"speed": speed, "scene": scene, "accuracy": accuracy, "panels": panels}[args.task]
    timing = args.task in ("speed", "scene")
    if timing != bool(args.checkpoint) or (not timing and not ((args.model or args.ensemble) and args.root)):
        parser.error("speed and scene need --checkpoint; accuracy and panels need --root and a --model or --ensemble")
    report(task(args), args)


if __name__ == "__main__":
    main()
