"""cloudseg beside ukis-csmask (Apache-2.0; bundled ONNX U-Net cloud and shadow models) on the same inputs.

    pip install "ukis-csmask[cpu]==1.0.0"
    python benchmarks/compare_ukis.py speed --checkpoint runs/.../best.safetensors [--onnx model.onnx]
    python benchmarks/compare_ukis.py accuracy --checkpoint runs/.../best.safetensors --root ../shared/data/l8biome

Input scaling: ukis-csmask expects top-of-atmosphere reflectance (float32, 0..1) in blue, green, red, NIR order
and normalises it itself. cloudseg expects the 8-bit images of the dataset format. Both get the same scene:
`speed` builds one 512² synthetic scene in reflectance and gives cloudseg its 8-bit encoding; `accuracy` reads the
8-bit test patches and gives ukis-csmask their reflectance, by inverting the square-root stretch the patches were
made with (`r = (v / 255)²`, see the dataset's SOURCES.md). Classes are compared where both have them: clear,
cloud (thick or thin), cloud shadow; the scores come from cloudseg's own metric code.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cloudseg.data.dataset import find_samples, normalise_pair, read_sample
from cloudseg.data.synth import make_scene
from cloudseg.inference.predict import model_predictor
from cloudseg.models.checkpoint import load_model
from cloudseg.schema import encode_reflectance
from cloudseg.training.metrics import confusion_scores

MERGED = ("clear", "cloud", "cloud_shadow")
CLOUDSEG_TO_MERGED = np.array([0, 1, 1, 2], dtype=np.uint8)  # clear, thick, thin, shadow -> clear, cloud, shadow
UKIS_BANDS = ["blue", "green", "red", "nir"]


def ukis_mask(reflectance_bgrn: np.ndarray) -> np.ndarray:
    """ukis-csmask's 4-band L1C model: (H, W) ids 0 clear, 1 cloud, 2 cloud shadow."""
    from ukis_csmask.mask import CSmask

    return CSmask(reflectance_bgrn.astype(np.float32), band_order=UKIS_BANDS, product_level="l1c").csm[..., 0]


def tensors(rgb: np.ndarray, nir: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(t[None] for t in normalise_pair(rgb, nir))


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
    pixels = encode_reflectance(image)
    rgb, aux = tensors(pixels[..., :3], pixels[..., 3:])
    model, _ = load_model(args.checkpoint)
    predict = model_predictor(model, torch.device("cpu"))
    results = {
        "cloudseg_pytorch_s": timed(lambda: predict(rgb, aux), args.repeats),
        "ukis_csmask_4b_s": timed(lambda: ukis_mask(image[..., [2, 1, 0, 3]]), args.repeats),
    }
    if args.onnx:
        import onnxruntime

        session = onnxruntime.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
        feed = {"rgb": rgb.numpy(), "aux": aux.numpy()}
        results["cloudseg_onnx_s"] = timed(lambda: session.run(None, feed), args.repeats)
    results.update({key.replace("_s", "_images_per_s"): 1.0 / value for key, value in list(results.items())})
    return {"size": 512, "threads": torch.get_num_threads(), "repeats": args.repeats, **results}


def accuracy(args: argparse.Namespace) -> dict:
    root = Path(args.root)
    samples = find_samples(root / "test", root / "test_labels")
    model, _ = load_model(args.checkpoint)
    predict = model_predictor(model, torch.device("cpu"))
    confusions = {"cloudseg": np.zeros((3, 3), np.int64), "ukis_csmask": np.zeros((3, 3), np.int64)}
    for files in samples:
        rgb, nir, ids = read_sample(files)
        truth = CLOUDSEG_TO_MERGED[ids]
        ours = CLOUDSEG_TO_MERGED[predict(*tensors(rgb, nir))[0].argmax(0).numpy()]
        reflectance = (np.dstack((rgb[..., ::-1], nir)).astype(np.float32) / 255.0) ** 2  # B, G, R, NIR
        for name, prediction in (("cloudseg", ours), ("ukis_csmask", ukis_mask(reflectance))):
            confusions[name] += np.bincount(truth.ravel() * 3 + prediction.ravel(), minlength=9).reshape(3, 3)
    report = {"images": len(samples), "classes": list(MERGED)}
    for name, confusion in confusions.items():
        scores = confusion_scores(torch.from_numpy(confusion))
        report[name] = {"mIoU": float(scores["mIoU"]), "accuracy": float(scores["accuracy"]),
                        **{f"iou/{c}": float(v) for c, v in zip(MERGED, scores["iou"], strict=True)}}  # fmt: skip
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=("speed", "accuracy"))
    parser.add_argument("--checkpoint", required=True, help="a cloudseg best.safetensors")
    parser.add_argument("--onnx", help="(speed) the same model exported with `cloudseg export`")
    parser.add_argument("--root", help="(accuracy) dataset root with test/ and test_labels/")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(speed(args) if args.task == "speed" else accuracy(args), indent=2))


if __name__ == "__main__":
    main()
