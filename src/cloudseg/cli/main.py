"""The `cloudseg` command: parse arguments, call one library function, print its result."""

import argparse
import logging
import sys

from cloudseg import __version__
from cloudseg.errors import CloudsegError
from cloudseg.schema import AUX_BANDS, NUM_CLASSES


def run_models(args: argparse.Namespace) -> None:
    from cloudseg.models.registry import ARCHITECTURES, MODEL_NAMES, count_parameters, parse_model_name

    print(f"{'model':<20} {'parameters':>11}  ({args.num_classes} classes, {args.aux_channels} aux channels)")
    for name in MODEL_NAMES:
        params = count_parameters(name, args.num_classes, args.aux_channels)
        print(f"{name:<20} {params / 1e6:>10.2f}M  {ARCHITECTURES[parse_model_name(name)[0]].summary}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudseg", description="Cloud and cloud-shadow segmentation of RGB + NIR images with CMX."
    )
    parser.add_argument("--version", action="version", version=f"cloudseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    models = commands.add_parser("models", help="list the model builders and their parameter counts")
    models.add_argument("--num-classes", type=int, default=NUM_CLASSES)
    models.add_argument("--aux-channels", type=int, default=len(AUX_BANDS))
    models.set_defaults(run=run_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args.run(args)
    except CloudsegError as error:
        if args.debug:
            raise
        print(f"cloudseg: error: {error}", file=sys.stderr)
        return 2
    return 0
