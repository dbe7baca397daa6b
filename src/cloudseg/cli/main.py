"""The `cloudseg` command: parse arguments, call one library function, print its result."""

import argparse
import dataclasses
import glob
import json
import logging
import time
import typing
from pathlib import Path

import yaml

from cloudseg import __version__
from cloudseg.cli.boundary import DEBUG_VARIABLE, EXIT_CODES, debug_requested, report
from cloudseg.cli.options import (
    ALL_SETTINGS,
    EVALUATE_HELP,
    PREDICT_HELP,
    SETTINGS_HELP,
    TRAIN_HELP,
    CommandParser,
    command_overrides,
)
from cloudseg.config import Sensor, load_config
from cloudseg.errors import CloudsegError, ConfigError
from cloudseg.schema import CLASS_NAMES, MIN_SIDE
from cloudseg.sections import to_dict
from cloudseg.signals import stop_at_once


def resolved_config(args: argparse.Namespace, overrides: list[str], *preset: str):
    return load_config(getattr(args, "config", None), [*preset, *overrides])


def run_models(args: argparse.Namespace, overrides: list[str]) -> None:
    from cloudseg.models.registry import ARCHITECTURES, MODEL_NAMES, count_parameters, parse_model_name

    model = resolved_config(args, overrides).model
    print(f"{'model':<20} {'parameters':>11}  ({model.num_classes} classes, {model.aux_channels} aux channels)")
    for name in MODEL_NAMES:
        params = count_parameters(name, num_classes=model.num_classes, aux_channels=model.aux_channels)
        print(f"{name:<20} {params / 1e6:>10.2f}M  {ARCHITECTURES[parse_model_name(name)[0]].summary}")


def run_synth(args: argparse.Namespace, overrides: list[str]) -> None:
    from cloudseg.data.synth import synthesize

    for flag, low in (("--n", 1), ("--size", MIN_SIDE), ("--workers", 1), ("--test", 0)):
        value = getattr(args, flag[2:])
        if value is not None and value < low:  # --test: None is n/4
            raise ConfigError(f"{flag} {value}: expected at least {low}")
    started = time.perf_counter()
    root = synthesize(args.output, args.n, args.test, args.size, args.seed, args.workers, args.overwrite)
    n_test = json.loads((root / "synth.json").read_text())["n_test"]
    print(
        f"wrote {args.n} training and {n_test} test scenes of {args.size}x{args.size} to {root} "
        f"(test labels apart in {root / 'test_labels'}) in {time.perf_counter() - started:.1f} s"
    )


def run_check_data(args: argparse.Namespace, overrides: list[str]) -> int:
    from cloudseg.data.check import check_dataset

    report_ = check_dataset(args.root, resolved_config(args, overrides).data.unknown_colours)
    print(report_.format())
    return 0 if report_.ok else 2


def run_show_augmentations(args: argparse.Namespace, overrides: list[str]) -> None:
    from cloudseg.data.preview import show_augmentations

    cfg = resolved_config(args, overrides, f"data.root={args.root}")
    print(f"wrote {show_augmentations(cfg.data, args.n, args.output, args.seed)}")


def run_cache(args: argparse.Namespace, overrides: list[str]) -> None:
    from cloudseg.data.cache import build_cache
    from cloudseg.data.dataset import find_samples

    root = Path(args.root)
    unknown_colours = resolved_config(args, overrides).data.unknown_colours
    started = time.perf_counter()
    samples = find_samples(root / "train", root / "train" / "label")
    folder = build_cache(samples, args.output, unknown_colours)
    print(f"cached {len(samples)} training scenes in {folder} in {time.perf_counter() - started:.1f} s; "
          f"train with --data.cache {folder}")  # fmt: skip


def run_config(args: argparse.Namespace, overrides: list[str]) -> None:
    print(yaml.safe_dump(to_dict(resolved_config(args, overrides)), sort_keys=False), end="")


DEFAULT_CONFIG = "cmx_b0"  # what `train` (and `config`) start from without --config
CHECKPOINTS_HELP = "checkpoints/best.safetensors of a run; several: the mean of their logits (an ensemble)"


def run_train(args: argparse.Namespace, overrides: list[str]) -> None:
    from cloudseg.training.run import train

    if args.resume:
        if overrides or args.config:
            raise ConfigError("--resume continues a run exactly, with the config saved in it; drop the other options")
        run_dir = train(resume=args.resume)
    else:
        run_dir = train(load_config(args.config or DEFAULT_CONFIG, overrides))
    print(f"run folder: {run_dir}")


def run_evaluate(args: argparse.Namespace, overrides: list[str]) -> None:
    from cloudseg.inference.evaluate import evaluate

    cfg = resolved_config(args, overrides)
    if cfg.data.root is None:
        raise ConfigError("evaluate needs the dataset: --data.root <folder>")
    evaluate(
        args.checkpoint, cfg.data.root, args.split, args.output, args.panels, cfg.predict, args.device, args.report
    )


def run_report(args: argparse.Namespace, overrides: list[str]) -> None:
    from cloudseg.inference.report import write_report

    print(f"wrote {write_report(args.evaluation, args.output)}")


def run_predict(args: argparse.Namespace, overrides: list[str]) -> int | None:
    import torch
    from lightning.pytorch.utilities import rank_zero_only

    from cloudseg.inference.geotiff import NAME_THE_BANDS, SceneScaling
    from cloudseg.inference.predict import predict
    from cloudseg.inference.sources import is_scene

    settings = resolved_config(args, overrides)
    scaling = None
    if any(getattr(args, n) is not None for n in ("bands", "sensor", "scale", "offset")):
        bands = None
        if args.bands:
            try:
                bands = [int(b) for b in args.bands.split(",")]
            except ValueError:
                bands = []
            if len(bands) != 4:
                raise ConfigError(f"--bands {args.bands}: expected four band numbers, R,G,B,NIR, e.g. 4,3,2,5")
        scaling = SceneScaling.of(args.sensor, bands, args.scale, args.offset)
    one_scene = is_scene(Path(args.input)) and not glob.has_magic(args.input)
    if one_scene and is_scene(Path(args.output)):  # one scene, one mask file
        from cloudseg.inference.geotiff import predict_scene_from_checkpoint

        if args.submission:
            raise ConfigError("--submission encodes masks of image pairs; a scene's mask is the GeoTIFF at --output")
        if scaling is None:
            raise ConfigError(f"{args.input}: {NAME_THE_BANDS}")
        path = predict_scene_from_checkpoint(
            args.checkpoint, args.input, args.output, scaling, settings.predict, args.device
        )
        print(f"wrote {path}")
        return
    chosen = [o.partition("=")[0] for o in overrides if o.startswith(("trainer.accelerator=", "trainer.devices="))]
    if args.device and chosen:
        raise ConfigError(f"--device names one device; with --{chosen[0]}, drop it")
    trainer = settings.trainer  # one device unless told more: a machine's other GPUs may be someone else's
    trainer = dataclasses.replace(trainer, devices=1) if trainer.devices == "auto" else trainer
    try:
        result = predict(args.checkpoint, args.input, args.output, settings.predict, args.submission, args.device,
                         args.overwrite, trainer, scaling)  # fmt: skip
    except CloudsegError as error:
        if rank_zero_only.rank != 0:  # another process of a distributed run: the first one says what failed
            return error.exit_code
        raise
    finally:
        # The distributed run ends here: its groups' threads are joined now, not torn down at interpreter exit
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if not result.main:  # another process of a distributed run: the first one reports
        return
    earlier = f", {result.skipped} of them from an earlier run" if result.skipped else ""
    submission = f"; submission {args.submission}" if args.submission else ""
    print(f"{len(result.masks)} mask{'' if len(result.masks) == 1 else 's'} in {args.output}{earlier}{submission}")
    print(result.summary())
    for note in result.notes:
        print(note)


def run_submit(args: argparse.Namespace, overrides: list[str]) -> None:
    from cloudseg.inference.rle import submission_from_masks

    print(f"wrote {submission_from_masks(args.masks, args.output)}")


def run_score(args: argparse.Namespace, overrides: list[str]) -> None:
    from cloudseg.inference.rle import score_submission

    unknown_colours = resolved_config(args, overrides).data.unknown_colours
    scores = score_submission(args.submission, args.labels, unknown_colours)
    print(f"{'class':<14} {'IoU':>7} {'Dice':>7}")
    for name in CLASS_NAMES:
        print(f"{name:<14} {scores[f'iou/{name}']:>7.4f} {scores[f'dice/{name}']:>7.4f}")
    mean_dice = scores["mean_image_dice"]
    print(f"mean IoU {scores['mIoU']:.4f}; mean Dice per image {mean_dice:.4f} ({scores['images']} images)")


def run_export(args: argparse.Namespace, overrides: list[str]) -> None:
    from cloudseg.inference.export import export_onnx
    from cloudseg.inference.onnx_graph import OPSET

    calibrated = resolved_config(args, overrides).predict.calibrated
    print(f"wrote {export_onnx(args.checkpoint, args.output, args.opset or OPSET, calibrated)}")


def run_demo(args: argparse.Namespace, overrides: list[str]) -> None:
    from cloudseg.demo import run_demo as demo

    demo(args.output, args.fast)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudseg",
        description="Cloud and cloud-shadow segmentation of RGB + NIR images with CMX.",
        epilog="Exit codes: "
        + "; ".join(f"{code} {meaning.split(':')[0]}" for code, meaning in EXIT_CODES.items())
        + f". --debug (or {DEBUG_VARIABLE}=1) shows the traceback of an error.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"cloudseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=CommandParser)

    def command(name, run, help, settings=(), memory="a batch or image size", epilog=None) -> CommandParser:
        """A subcommand; `settings` are the config keys or sections it takes as --section.key value, and `run` returns
        its exit code, None for 0."""
        sub = commands.add_parser(
            name, help=help, description=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        sub.set_defaults(run=run, command=name, settings=settings, memory_hint=memory)
        sub.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
        )
        return sub

    command(
        "models", run_models, "list the model builders and their parameter counts",
        ("model.num_classes", "model.aux_channels"),
        epilog="  --model.num_classes N, --model.aux_channels N   count the parameters for these",
    )  # fmt: skip

    synth = command("synth", run_synth, "write a synthetic dataset of cloud scenes with exact labels")
    synth.add_argument("output", help="dataset folder to create (new or empty)")
    synth.add_argument("--n", type=int, default=64, help="training scenes (default 64)")
    synth.add_argument("--test", type=int, default=None, help="test scenes (default n/4)")
    synth.add_argument("--size", type=int, default=256, help="scene width and height in pixels (default 256)")
    synth.add_argument("--seed", type=int, default=0, help="the same seed gives the same scenes (default 0)")
    synth.add_argument("--workers", type=int, default=1, help="processes writing scenes (the files are the same)")
    synth.add_argument("--overwrite", action="store_true", help="replace a synthetic dataset already in the folder")

    colours_help = "  --data.unknown_colours ignore   label colours outside the class table count as ignored pixels"
    check = command(
        "check-data", run_check_data, "check every file of a dataset folder and summarise it",
        ("data.unknown_colours",), epilog=colours_help,
    )  # fmt: skip
    check.add_argument("root", help="dataset folder with train/ and/or test/")

    show = command(
        "show-augmentations", run_show_augmentations, "write a grid of augmented training samples",
        ("data.augment", "data.unknown_colours"), epilog=SETTINGS_HELP + "  --data.augment.* as in training",
    )  # fmt: skip
    show.add_argument("root", help="dataset folder with train/{rgb,ngr,label}")
    show.add_argument("-n", type=int, default=8, help="samples to show (default 8)")
    show.add_argument("-o", "--output", default="augmentations.png", help="the picture (default augmentations.png)")
    show.add_argument("--seed", type=int, default=0, help="the same seed draws the same samples (default 0)")
    show.add_argument("--config", help="YAML config whose data.augment section is used")

    cache = command(
        "cache", run_cache, "decode the training images once, so training skips PNG decoding",
        ("data.unknown_colours",), epilog=colours_help,
    )  # fmt: skip
    cache.add_argument("root", help="dataset folder with train/{rgb,ngr,label}")
    cache.add_argument("-o", "--output", required=True, help="cache folder (then: --data.cache <folder>)")

    config = command(
        "config", run_config, "print a config with its overrides applied: every key, as YAML", ALL_SETTINGS,
        epilog=SETTINGS_HELP,
    )  # fmt: skip
    config.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"YAML file or shipped config (default: {DEFAULT_CONFIG})"
    )

    train = command(
        "train", run_train, "train a model (Lightning) and write a run folder", ALL_SETTINGS,
        memory="data.batch_size or data.augment.crop_size", epilog=TRAIN_HELP,
    )  # fmt: skip
    train.add_argument(
        "--config",
        help=f"YAML file or shipped config: cmx_b0 (CPU), cmx_b2 (reference recipe); default {DEFAULT_CONFIG}",
    )
    train.add_argument("--resume", help="run folder or last.ckpt to continue exactly where it stopped")

    inference_memory = "predict.tile_batch or predict.tile"
    evaluate = command(
        "evaluate", run_evaluate, "score a checkpoint: per-class scores, calibration, confusion matrix",
        ("data.root", "data.unknown_colours", "predict"), memory=inference_memory, epilog=EVALUATE_HELP,
    )  # fmt: skip
    evaluate.add_argument("--checkpoint", required=True, nargs="+", help=CHECKPOINTS_HELP)
    evaluate.add_argument(
        "--split", default="val", help="val or train (the run's split), test, or a JSON file listing names"
    )
    evaluate.add_argument("--output", help="folder for metrics.json and the figures (default: beside the run)")
    evaluate.add_argument("--panels", type=int, default=0, help="also draw prediction panels of this many images")
    evaluate.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    evaluate.add_argument("--report", action="store_true", help="also write report.html (as `cloudseg report`)")
    evaluate.add_argument("--config", help="YAML config whose data.root and predict section are used")

    predict = command(
        "predict", run_predict, "write colour masks (and optionally a Kaggle submission)",
        ("predict", "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy"),
        memory=inference_memory, epilog=PREDICT_HELP,
    )  # fmt: skip
    predict.add_argument("--checkpoint", required=True, nargs="+", help=CHECKPOINTS_HELP)
    predict.add_argument(
        "--input", required=True,
        help="image pairs: a dataset root (its test/), a folder with rgb/ + ngr/, rgb/<name>; GeoTIFF scenes: a .tif, "
        "a folder of them, a quoted glob; or a .txt file listing any of these, one a line",
    )  # fmt: skip
    predict.add_argument(
        "--output",
        required=True,
        help="folder for the masks: <name>.png of pairs, <name>.tif of scenes (one --input scene.tif may name a .tif)",
    )
    predict.add_argument("--submission", help="also write this Kaggle submission.csv")
    predict.add_argument(
        "--overwrite", action="store_true",
        help="predict every image again, even those that <output>/manifest.jsonl shows done as this run would",
    )  # fmt: skip
    predict.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    predict.add_argument("--config", help="YAML config whose predict section is used (tile, overlap, tta, ...)")
    scene = predict.add_argument_group("GeoTIFF scenes (--input scene.tif --output mask.tif; extra `geo`)")
    scene.add_argument("--bands", help="1-based band numbers of R,G,B,NIR, e.g. 4,3,2,5")
    scene.add_argument("--sensor", choices=typing.get_args(Sensor), help="band and scaling preset")
    scene.add_argument("--scale", type=float, help="reflectance = DN * scale + offset (default: the preset's, or 1)")
    scene.add_argument(
        "--offset", type=float,
        help="see --scale (default: the preset's, for sentinel2 the product's metadata's; or 0)",
    )  # fmt: skip

    submit = command("submit", run_submit, "encode a folder of colour (or class-id) masks as a Kaggle submission.csv")
    submit.add_argument("masks", help="folder of colour masks")
    submit.add_argument("-o", "--output", default="submission.csv", help="the CSV (default submission.csv)")

    report = command("report", run_report, "write an evaluation's report.html: one page that opens offline")
    report.add_argument("evaluation", help="an evaluation folder (the --output of evaluate), or a run folder")
    report.add_argument("-o", "--output", help="the HTML file (default: report.html in the evaluation folder)")

    score = command(
        "score", run_score, "score a submission.csv against a folder of colour labels", ("data.unknown_colours",),
        epilog=colours_help,
    )  # fmt: skip
    score.add_argument("submission")
    score.add_argument("--labels", required=True, help="folder of colour label images")

    export = command(
        "export", run_export, "export a checkpoint to ONNX (dynamic batch, height, width)", ("predict.calibrated",),
        epilog="  --predict.calibrated false   the logits without the checkpoint's fitted temperature",
    )  # fmt: skip
    export.add_argument("--checkpoint", required=True, nargs="+", help=CHECKPOINTS_HELP)
    export.add_argument("--output", required=True, help="model.onnx (or a folder: <folder>/model.onnx)")
    export.add_argument("--opset", type=int, help="the ONNX operator set (default: the one cloudseg is tested with)")

    demo = command(
        "demo", run_demo, "synthetic data -> training -> evaluation -> prediction -> submission, on CPU",
        memory="nothing: the demo needs about 2 GB of memory",
    )  # fmt: skip
    demo.add_argument("--fast", action="store_true", help="a smoke test of the whole path in about a minute")
    demo.add_argument("--output", default="cloudseg-demo", help="folder for everything the demo writes")

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, tokens = parser.parse_known_args(argv)
    if not hasattr(args, "run"):
        if tokens:
            parser.error(f"unrecognised arguments: {' '.join(tokens)}")
        parser.print_help()
        return 0
    logger, handler = logging.getLogger("cloudseg"), logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)  # Lightning configures its own loggers
    logger.setLevel(logging.INFO)
    try:
        with stop_at_once():
            return args.run(args, command_overrides(args, tokens)) or 0
    except (Exception, KeyboardInterrupt, SystemExit) as error:
        if type(error) is SystemExit:  # a plain exit, not Lightning's SIGTERMException
            raise
        return report(error, args.memory_hint, debug_requested(args.debug))
    finally:
        logger.removeHandler(handler)
