"""The `cloudseg` command: parse arguments, call one library function, print its result."""

import argparse
import json
import logging
import sys
import time

from cloudseg import __version__
from cloudseg.errors import CloudsegError, ConfigError
from cloudseg.schema import AUX_BANDS, NUM_CLASSES


def config_overrides(tokens: list[str]) -> list[str]:
    """`--data.root x --data.augment.hflip=0` -> ["data.root=x", "data.augment.hflip=0"]."""
    overrides, rest = [], list(tokens)
    while rest:
        token = rest.pop(0)
        key, equals, value = token[2:].partition("=")
        if not token.startswith("--") or "." not in key:
            raise ConfigError(f"unrecognised argument {token!r}; config keys are given as --section.key value")
        if not equals:
            if not rest:
                raise ConfigError(f"{token} needs a value")
            value = rest.pop(0)
        overrides.append(f"{key}={value}")
    return overrides


def resolved_config(args: argparse.Namespace, extra: list[str], *preset: str):
    from cloudseg.config import load_config

    return load_config(getattr(args, "config", None), [*preset, *config_overrides(extra)])


def run_models(args: argparse.Namespace, extra: list[str]) -> int:
    from cloudseg.models.registry import ARCHITECTURES, MODEL_NAMES, count_parameters, parse_model_name

    print(f"{'model':<20} {'parameters':>11}  ({args.num_classes} classes, {args.aux_channels} aux channels)")
    for name in MODEL_NAMES:
        params = count_parameters(name, args.num_classes, args.aux_channels)
        print(f"{name:<20} {params / 1e6:>10.2f}M  {ARCHITECTURES[parse_model_name(name)[0]].summary}")
    return 0


def run_synth(args: argparse.Namespace, extra: list[str]) -> int:
    from cloudseg.data.synth import synthesize

    started = time.perf_counter()
    root = synthesize(args.output, args.n, args.test, args.size, args.seed, args.workers)
    n_test = json.loads((root / "synth.json").read_text())["n_test"]
    print(
        f"wrote {args.n} training and {n_test} test scenes of {args.size}x{args.size} to {root} "
        f"(test labels apart in {root / 'test_labels'}) in {time.perf_counter() - started:.1f} s"
    )
    return 0


def run_check_data(args: argparse.Namespace, extra: list[str]) -> int:
    from cloudseg.data.check import check_dataset

    report = check_dataset(args.root, args.unknown_colours)
    print(report.format())
    return 0 if report.ok else 2


def run_show_augmentations(args: argparse.Namespace, extra: list[str]) -> int:
    from cloudseg.data.preview import show_augmentations

    cfg = resolved_config(args, extra, f"data.root={args.root}")
    print(f"wrote {show_augmentations(cfg.data, args.n, args.output, args.seed)}")
    return 0


def run_cache(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from cloudseg.data.cache import build_cache
    from cloudseg.data.dataset import find_samples

    root = Path(args.root)
    started = time.perf_counter()
    samples = find_samples(root / "train", root / "train" / "label")
    folder = build_cache(samples, args.output, args.unknown_colours)
    print(f"cached {len(samples)} training scenes in {folder} in {time.perf_counter() - started:.1f} s; "
          f"train with --data.cache {folder}")  # fmt: skip
    return 0


def run_config(args: argparse.Namespace, extra: list[str]) -> int:
    import yaml

    from cloudseg.config import to_dict

    print(yaml.safe_dump(to_dict(resolved_config(args, extra)), sort_keys=False), end="")
    return 0


DEFAULT_CONFIG = "cmx_b0"  # what `train` (and `config`) start from without --config
CHECKPOINTS_HELP = "checkpoints/best.safetensors of a run; several: the mean of their logits (an ensemble)"


def run_train(args: argparse.Namespace, extra: list[str]) -> int:
    from cloudseg.training.run import train

    if args.resume:
        if extra or args.config:
            raise ConfigError("--resume continues a run exactly, with the config saved in it; drop the other options")
        run_dir = train(resume=args.resume)
    else:
        args.config = args.config or DEFAULT_CONFIG
        run_dir = train(resolved_config(args, extra))
    print(f"run folder: {run_dir}")
    return 0


def run_evaluate(args: argparse.Namespace, extra: list[str]) -> int:
    from cloudseg.training.run import evaluate

    root = args.root or resolved_config(args, extra).data.root
    if root is None:
        raise ConfigError("evaluate needs the dataset: --data.root <folder>")
    evaluate(args.checkpoint, root, args.split, args.output, args.panels, args.tta)
    return 0


def is_scene(path: str) -> bool:
    """A GeoTIFF scene to predict as a whole, rather than an rgb/<name>.tif of an image pair."""
    from pathlib import Path

    source = Path(path)
    return source.suffix.lower() in (".tif", ".tiff") and source.parent.name != "rgb"


def run_predict(args: argparse.Namespace, extra: list[str]) -> int:
    from cloudseg.inference.predict import predict

    cfg = resolved_config(args, extra).predict
    if is_scene(args.input):
        from cloudseg.inference.geotiff import predict_scene_from_checkpoint

        bands = [int(b) for b in args.bands.split(",")] if args.bands else None
        if bands is not None and len(bands) != 4:
            raise ConfigError(f"--bands {args.bands}: expected four band numbers, R,G,B,NIR")
        path = predict_scene_from_checkpoint(
            args.checkpoint, args.input, args.output, args.sensor, bands, args.scale, args.offset, cfg, args.device
        )
        print(f"wrote {path}")
        return 0
    result = predict(args.checkpoint, args.input, args.output, cfg, args.submission, args.device)
    print(f"wrote {len(result.masks)} masks to {args.output}" + (f" and {args.submission}" if args.submission else ""))
    print(result.summary())
    return 0


def run_submit(args: argparse.Namespace, extra: list[str]) -> int:
    from cloudseg.inference.rle import submission_from_masks

    print(f"wrote {submission_from_masks(args.masks, args.output)}")
    return 0


def run_score(args: argparse.Namespace, extra: list[str]) -> int:
    from cloudseg.inference.rle import score_submission
    from cloudseg.schema import CLASS_NAMES

    scores = score_submission(args.submission, args.labels)
    print(f"{'class':<14} {'IoU':>7} {'Dice':>7}")
    for name in CLASS_NAMES:
        print(f"{name:<14} {scores[f'iou/{name}']:>7.4f} {scores[f'dice/{name}']:>7.4f}")
    mean_dice = scores["mean_image_dice"]
    print(f"mean IoU {scores['mIoU']:.4f}; mean Dice per image {mean_dice:.4f} ({scores['images']} images)")
    return 0


def run_export(args: argparse.Namespace, extra: list[str]) -> int:
    from cloudseg.inference.export import export_onnx

    print(f"wrote {export_onnx(args.checkpoint, args.output, args.opset)}")
    return 0


def run_demo(args: argparse.Namespace, extra: list[str]) -> int:
    from cloudseg.demo import run_demo as demo

    demo(args.output, args.fast)
    return 0


def run_benchmark(args: argparse.Namespace, extra: list[str]) -> int:
    from cloudseg import benchmark
    from cloudseg.models.checkpoint import default_device

    if args.target == "data":
        cfg = resolved_config(args, extra)
        print(benchmark.write_result(benchmark.benchmark_data(cfg.data, args.batches, args.warmup), args.json))
        return 0
    if extra:
        raise ConfigError(f"unrecognised arguments {' '.join(extra)}")
    device = default_device(args.device)
    fast = benchmark.fast_recipe(args.batch, device, args.precision, args.compile)
    recipe = fast if args.mode == "fast" else benchmark.BASELINE
    model = {"model_name": args.model, "device": device}
    timing = {"steps": args.batches, "warmup": args.warmup, "peak_tflops": args.peak_tflops}
    if args.scene:
        if args.target != "infer":
            raise ConfigError("--scene measures sliding-window inference: use it with `benchmark infer`")
        if args.overlap >= args.size:
            raise ConfigError(f"--overlap {args.overlap} must be smaller than the tile (--size {args.size})")
        result = benchmark.benchmark_scene(
            scene=args.scene, tile=args.size, overlap=args.overlap, recipe=recipe, repeats=args.batches,
            warmup=args.warmup, **model,
        )  # fmt: skip
    elif args.profile:
        result = benchmark.profile_model(args.target, size=args.size, recipe=recipe, steps=args.batches, **model)
        print(benchmark.format_profile(result), file=sys.stderr)
    elif args.ladder:
        recipes = benchmark.ladder(args.target, args.batch, args.compile)
        result = {"rows": benchmark.benchmark_recipes(args.target, recipes, size=args.size, **model, **timing)}
        print(benchmark.format_rows(result["rows"]), file=sys.stderr)
    elif args.compare:
        result = benchmark.compare(args.target, fast, size=args.size, **model, **timing)
        print(benchmark.format_rows([result["baseline"], result["fast"]]), file=sys.stderr)
    else:
        result = benchmark.benchmark_model(args.target, size=args.size, recipe=recipe, **model, **timing)
        print(benchmark.format_rows([result]), file=sys.stderr)
    print(benchmark.write_result(result, args.json))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudseg",
        description="Cloud and cloud-shadow segmentation of RGB + NIR images with CMX.",
        epilog="Config keys can be set on any command that takes --config, as --section.key value.",
    )
    parser.add_argument("--version", action="version", version=f"cloudseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, run, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    models = command("models", run_models, "list the model builders and their parameter counts")
    models.add_argument("--num-classes", type=int, default=NUM_CLASSES)
    models.add_argument("--aux-channels", type=int, default=len(AUX_BANDS))

    synth = command("synth", run_synth, "write a synthetic dataset of cloud scenes with exact labels")
    synth.add_argument("output", help="dataset folder to create")
    synth.add_argument("--n", type=int, default=64, help="training scenes (default 64)")
    synth.add_argument("--test", type=int, default=None, help="test scenes (default n/4)")
    synth.add_argument("--size", type=int, default=256, help="scene width and height in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=1, help="processes writing scenes (the files are the same)")

    check = command("check-data", run_check_data, "check every file of a dataset folder and summarise it")
    check.add_argument("root", help="dataset folder with train/ and/or test/")
    check.add_argument(
        "--unknown-colours",
        choices=("error", "ignore"),
        default="error",
        help="label colours outside the class table: report them, or count them as ignored pixels",
    )

    show = command("show-augmentations", run_show_augmentations, "write a grid of augmented training samples")
    show.add_argument("root", help="dataset folder with train/{rgb,ngr,label}")
    show.add_argument("-n", type=int, default=8, help="samples to show")
    show.add_argument("-o", "--output", default="augmentations.png")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--config", help="YAML config whose data.augment section is used")

    cache = command("cache", run_cache, "decode the training images once, so training skips PNG decoding")
    cache.add_argument("root", help="dataset folder with train/{rgb,ngr,label}")
    cache.add_argument("-o", "--output", required=True, help="cache folder (then: --data.cache <folder>)")
    cache.add_argument("--unknown-colours", choices=("error", "ignore"), default="error")

    config = command("config", run_config, "print a config with its overrides applied: every key, as YAML")
    config.add_argument("--config", default=DEFAULT_CONFIG, help="YAML file or shipped config (default: cmx_b0)")

    train = command("train", run_train, "train a model (Lightning) and write a run folder")
    train.add_argument(
        "--config", help="YAML file or shipped config: cmx_b0 (CPU; the default), cmx_b2 (the reference recipe)"
    )
    train.add_argument("--resume", help="run folder or last.ckpt to continue exactly where it stopped")

    evaluate = command("evaluate", run_evaluate, "score a checkpoint: per-class table, metrics.json, confusion.png")
    evaluate.add_argument("--checkpoint", required=True, nargs="+", help=CHECKPOINTS_HELP)
    evaluate.add_argument("--root", help="dataset folder (or --data.root)")
    evaluate.add_argument(
        "--split", default="val", help="val or train (the run's split), test, or a JSON list of names"
    )
    evaluate.add_argument("--output", help="folder for metrics.json and confusion.png (default: beside the run)")
    evaluate.add_argument("--panels", type=int, default=0, help="also draw prediction panels of this many images")
    evaluate.add_argument("--tta", default="none", help="test-time augmentation: none, flips or d4 (8 symmetries)")

    predict = command("predict", run_predict, "write colour masks (and optionally a Kaggle submission)")
    predict.add_argument("--checkpoint", required=True, nargs="+", help=CHECKPOINTS_HELP)
    predict.add_argument(
        "--input", required=True, help="dataset root (its test/), folder with rgb/ + ngr/, or rgb/<name>"
    )
    predict.add_argument("--output", required=True, help="folder for <name>.png colour masks")
    predict.add_argument("--submission", help="also write this Kaggle submission.csv")
    predict.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    predict.add_argument("--config", help="YAML config whose predict section is used (tile, overlap, tta, ...)")
    scene = predict.add_argument_group("GeoTIFF scenes (--input scene.tif --output mask.tif; extra `geo`)")
    scene.add_argument("--bands", help="1-based band numbers of R,G,B,NIR, e.g. 4,3,2,5")
    scene.add_argument("--sensor", choices=("landsat8", "landsat9", "sentinel2"), help="band and scaling preset")
    scene.add_argument("--scale", type=float, help="reflectance = DN * scale + offset (default: the preset's, or 1)")
    scene.add_argument("--offset", type=float, help="see --scale (default: the preset's, or 0)")

    submit = command("submit", run_submit, "encode a folder of colour masks as a Kaggle submission.csv")
    submit.add_argument("masks", help="folder of colour masks")
    submit.add_argument("-o", "--output", default="submission.csv")

    score = command("score", run_score, "score a submission.csv against a folder of colour labels")
    score.add_argument("submission")
    score.add_argument("--labels", required=True, help="folder of colour label images")

    export = command("export", run_export, "export a checkpoint to ONNX (dynamic batch, height, width)")
    export.add_argument("--checkpoint", required=True, nargs="+", help=CHECKPOINTS_HELP)
    export.add_argument("--output", required=True, help="model.onnx")
    export.add_argument("--opset", type=int, default=17)

    demo = command("demo", run_demo, "synthetic data -> training -> evaluation -> prediction -> submission, on CPU")
    demo.add_argument("--fast", action="store_true", help="a smoke test of the whole path in about a minute")
    demo.add_argument("--output", default="cloudseg-demo", help="folder for everything the demo writes")

    bench = command("benchmark", run_benchmark, "measure throughput and write it as JSON")
    bench.add_argument(
        "target", choices=("train", "infer", "data"),
        help="train: training steps; infer: inference batches; data: the training loader with full augmentation",
    )  # fmt: skip
    bench.add_argument("--config", help="YAML config (data)")
    bench.add_argument("--model", default="cmx_b2")
    bench.add_argument("--size", type=int, default=512, help="input size; with --scene, the tile size")
    bench.add_argument("--batch", type=int, default=16, help="batch of the fast mode (baseline uses 4)")
    bench.add_argument("--mode", choices=("fast", "baseline"), default="fast")
    how = bench.add_mutually_exclusive_group()
    how.add_argument("--compare", action="store_true", help="run baseline and fast, and report the speed-up")
    how.add_argument("--ladder", action="store_true", help="baseline, then one speed-up more per row, each measured")
    how.add_argument("--profile", action="store_true", help="time per kind of block, and the costliest operators")
    how.add_argument("--scene", type=int, help="infer: sliding-window prediction of one SCENE x SCENE pair")
    bench.add_argument("--overlap", type=int, default=128, help="with --scene: tile overlap in pixels")
    bench.add_argument(
        "--precision", choices=("auto", "32", "bf16"), default="auto", help="fast mode's (auto: bf16 on GPUs)"
    )
    bench.add_argument(
        "--compile", choices=("auto", "none", "default", "max-autotune", "reduce-overhead"), default="auto",
        help="fast mode's torch.compile mode (auto: default on GPUs, none on CPUs; reduce-overhead adds CUDA "
        "graphs); with --ladder, a mode other than default adds a row",
    )  # fmt: skip
    bench.add_argument("--device", help="cuda or cpu (default: cuda if available)")
    bench.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU")
    bench.add_argument("--batches", type=int, default=20, help="timed steps (with --scene: timed scenes)")
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--json", help="also write the result to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 0
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("cloudseg").addHandler(handler)  # Lightning configures its own loggers
    logging.getLogger("cloudseg").setLevel(logging.INFO)
    try:
        return args.run(args, extra)
    except CloudsegError as error:
        if args.debug:
            raise
        print(f"cloudseg: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        # Every file cloudseg writes appears whole or not at all, so what was written stays usable.
        print("cloudseg: interrupted; the files written so far are complete", file=sys.stderr)
        return 130
