"""Training and inference throughput of cloudseg's models, measured the way the docs report it (speed is measured
here, never in tests): a recipe's steps on random inputs, a ladder of recipes that adds one speed-up per row in
one process, or sliding windows over a scene; with FLOPs, MFU and peak memory. Results print as a table and JSON.

    python benchmarks/speed.py train --model cmx_b2 --size 512 --batch 16 --compare   # baseline vs fast
    python benchmarks/speed.py train --model cmx_b2 --ladder                         # one speed-up more per row
    python benchmarks/speed.py train --model cmx_b2 --profile                        # time per block, operators
    python benchmarks/speed.py infer --model cmx_b2 --batch 64 --compare             # whole 512² images
    python benchmarks/speed.py infer --model cmx_b2 --scene 4096                     # sliding window, one scene
"""

import argparse
import dataclasses
import platform
import resource
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import torch
import torch.nn.functional as F
from records import add_record_options, report
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from cloudseg.config import LossConfig
from cloudseg.models.checkpoint import default_device
from cloudseg.models.resample import upsample_bilinear

# Dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets, without sparsity), matched by substring of the
# device name, most specific first. `--peak-tflops` overrides.
BF16_PEAK_TFLOPS = (
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),  # SXM
    ("H200", 989.4),
    ("GH200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("RTX 4090", 165.2),
    ("V100", 125.0),  # fp16; V100 has no bf16
)


def known_peak(device_name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in device_name), None)


def _environment(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak resident set


def _peak_reserved_mb(device: torch.device) -> float | None:
    """The allocator's peak reserve on a GPU. It holds the memory pool of CUDA graphs, which is filled while they
    are recorded, in the warm-up, and so is missing from the timed steps' peak allocation."""
    return torch.cuda.max_memory_reserved(device) / 2**20 if device.type == "cuda" else None


def count_flops(model: torch.nn.Module, rgb: torch.Tensor, aux: torch.Tensor, loss=None) -> dict:
    """FLOPs per image of the forward pass (FlopCounterMode) and of a training step.

    The training step is taken as 3 x forward (the backward of every conv and matmul costs twice its forward),
    the usual convention for MFU. FlopCounterMode's own count of the backward is kept as
    `flops_train_counted_per_image` but not used: in torch 2.13 it counts the backward of grouped (depthwise)
    convolutions as if they were not grouped (76 MFLOP instead of 1.2 for a 128-channel 3x3 depthwise conv at
    16²), which would inflate the MFU of MiT's Mix-FFN several times.
    """
    batch = rgb.shape[0]
    # Attention as plain matmuls, which every device counts: FlopCounterMode has no formula for the CPU's fused
    # attention kernel and counted CMX-B2 15.6 GFLOP short on the CPU of the GPU's count.
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(rgb, aux)
    forward = counter.get_total_flops() / batch
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        logits = model(rgb, aux)
        target = torch.zeros(logits.shape[0], *logits.shape[2:], dtype=torch.long, device=logits.device)
        (loss(logits, target)[0] if loss else logits.float().mean()).backward()
    model.zero_grad(set_to_none=True)
    return {
        "flops_forward_per_image": forward,
        "flops_train_per_image": 3 * forward,
        "flops_train_counted_per_image": counter.get_total_flops() / batch,
    }


def use_decoder_variant(model: torch.nn.Module, folded: bool, gather_backward: bool) -> None:
    """The decoder of the ladder's earlier rows: step by step as SegFormer describes it (upsample every stage's
    projection, concatenate, fuse) unless `folded`, and with F.interpolate's scattering backward unless
    `gather_backward`. cloudseg's own decoder is folded, with the gathering backward (models/resample.py)."""
    if folded and gather_backward:
        return
    decoder = model.decoder

    def upsample(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if gather_backward:
            return upsample_bilinear(x, size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        if folded:  # as AllMLPDecoder.forward computes it
            fuse = decoder.fuse[0].weight.flatten(1).split(decoder.fuse[0].out_channels, dim=1)
            fused = sum(
                upsample(map, size) if index else map
                for index, map in enumerate(
                    F.conv2d(feature, (part @ project.weight.flatten(1))[..., None, None], part @ project.bias)
                    for project, feature, part in zip(decoder.project, features, fuse, strict=True)
                )
            )
        else:
            maps = [project(feature) for project, feature in zip(decoder.project, features, strict=True)]
            fused = decoder.fuse[0](torch.cat([maps[0]] + [upsample(m, size) for m in maps[1:]], dim=1))
        return decoder.classify(decoder.dropout(decoder.fuse[2](decoder.fuse[1](fused))))

    decoder.forward = forward


@dataclass(frozen=True)
class Recipe:
    """How a benchmark runs the model. The defaults are the reference implementation's way (the baseline):
    fp32, eager, NCHW, unfused AdamW, batch 4, and the decoder computed step by step as SegFormer describes it."""

    name: str = "baseline"
    batch: int = 4
    folded_decoder: bool = False  # the same function in a third of CMX-B0's FLOPs (AllMLPDecoder.forward)
    gather_backward: bool = False  # the decoder's upsampling backward as matmuls, not atomic adds (models.resample)
    bf16: bool = False  # autocast
    channels_last: bool = False
    fused_adamw: bool = False
    cudnn_benchmark: bool = False  # cuDNN times its convolution algorithms once per input shape, keeps the fastest
    compile: str | None = None  # a torch.compile mode: default, max-autotune, reduce-overhead (CUDA graphs)


BASELINE = Recipe()


def fast_recipe(batch: int, device: torch.device, precision: str = "auto", compile_mode: str = "auto") -> Recipe:
    """Everything on: bf16 autocast (auto: on GPUs), channels_last, fused AdamW and torch.compile (auto: on GPUs,
    as compiling takes minutes on a CPU)."""
    from cloudseg.inference.predictor import runs_bf16
    from cloudseg.training.task import fused_adamw

    cuda = device.type == "cuda"
    mode = ("default" if cuda else None) if compile_mode == "auto" else None if compile_mode == "none" else compile_mode
    return Recipe(
        "fast", batch, folded_decoder=True, gather_backward=True, bf16=runs_bf16(precision, device), channels_last=True,
        fused_adamw=fused_adamw(device), cudnn_benchmark=cuda, compile=mode,
    )  # fmt: skip


def ladder(target: str, batch: int, compile_mode: str = "default") -> list[Recipe]:
    """The baseline, then one speed-up switched on per row and kept for the rows below; `compile_mode` "none"
    stops before torch.compile, and a mode other than "default" adds a row for it."""
    steps = [
        ("+ bf16 autocast", {"bf16": True}),
        ("+ channels_last", {"channels_last": True}),
        *([("+ fused AdamW", {"fused_adamw": True})] if target == "train" else []),
        (f"+ batch {batch}", {"batch": batch}),
        ("+ folded decoder", {"folded_decoder": True}),
        *([("+ matmul upsampling bwd", {"gather_backward": True})] if target == "train" else []),
        ("+ cudnn.benchmark", {"cudnn_benchmark": True}),
    ]
    if compile_mode != "none":
        steps.append(("+ torch.compile", {"compile": "default"}))
    if compile_mode not in ("default", "none", "auto"):
        steps.append((f"+ compile mode {compile_mode}", {"compile": compile_mode}))
    rows = [BASELINE]
    for name, change in steps:
        rows.append(dataclasses.replace(rows[-1], name=name, **change))
    return rows


def _inputs(size: int, batch: int, device: torch.device, memory_format: torch.memory_format):
    generator = torch.Generator(device).manual_seed(0)
    rgb = torch.randn(batch, 3, size, size, device=device, generator=generator)
    aux = torch.randn(batch, 1, size, size, device=device, generator=generator)
    mask = torch.randint(0, 4, (batch, size, size), device=device, generator=generator)
    return rgb.contiguous(memory_format=memory_format), aux.contiguous(memory_format=memory_format), mask


def build_step(target: str, model_name: str, size: int, recipe: Recipe, dev: torch.device):
    """The model and one training step or inference batch of it on fixed random inputs, run as `recipe` says."""
    from cloudseg.config import WITHOUT_CUDA_GRAPHS
    from cloudseg.models.registry import build_model
    from cloudseg.training.losses import SegmentationLoss

    torch.manual_seed(0)
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model = build_model(model_name).to(dev).train(target == "train").to(memory_format=memory_format)
    use_decoder_variant(model, recipe.folded_decoder, recipe.gather_backward)
    rgb, aux, mask = _inputs(size, recipe.batch, dev, memory_format)
    loss_fn = SegmentationLoss(LossConfig()).to(dev)
    torch.compiler.reset()  # each recipe compiles afresh, not against the last one's guards
    torch.backends.cudnn.benchmark = recipe.cudnn_benchmark  # process-wide: every recipe sets its own
    network = torch.compile(model, mode=recipe.compile, dynamic=False) if recipe.compile else model
    # as training compiles them: the loss without CUDA graphs
    loss_mode = WITHOUT_CUDA_GRAPHS.get(recipe.compile, recipe.compile)
    criterion = torch.compile(loss_fn, mode=loss_mode, dynamic=False) if recipe.compile else loss_fn
    autocast = torch.autocast(dev.type, torch.bfloat16, enabled=recipe.bf16)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, fused=recipe.fused_adamw, foreach=None if recipe.fused_adamw else False
    )

    def step() -> None:
        if target == "train":
            with autocast:
                loss, _ = criterion(network(rgb, aux), mask)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode(), autocast:
                network(rgb, aux)

    return model, step


def timed_steps(step, steps: int, warmup: int, dev: torch.device) -> tuple[float, float]:
    """(seconds of the warm-up, compilation included; seconds per timed step), the device synchronised."""
    started = time.perf_counter()
    for _ in range(warmup):
        step()
    _synchronize(dev)
    warmup_seconds = time.perf_counter() - started
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(dev)
    return warmup_seconds, (time.perf_counter() - started) / steps


def _release(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def benchmark_model(
    target: str,
    model_name: str = "cmx_b2",
    size: int = 512,
    recipe: Recipe = BASELINE,
    steps: int = 20,
    warmup: int = 5,
    device: str | torch.device | None = None,
    peak_tflops: float | None = None,
    flops: dict | None = None,
) -> dict:
    """Times training steps (`target="train"`) or inference batches (`"infer"`) of a model on random inputs run
    as `recipe` says; `flops` (from count_flops) saves counting again for every recipe of one model."""
    from cloudseg.models.checkpoint import default_device

    dev = default_device(device)
    flops = flops or _count_model_flops(model_name, size, recipe.folded_decoder, dev)
    model, step = build_step(target, model_name, size, recipe, dev)
    warmup_seconds, seconds = timed_steps(step, steps, warmup, dev)
    images_per_s = recipe.batch / seconds
    per_image = flops["flops_train_per_image" if target == "train" else "flops_forward_per_image"]
    environment = _environment(dev)
    peak = peak_tflops or (known_peak(environment["device"]) if dev.type == "cuda" else None)
    achieved = per_image * images_per_s / 1e12
    result = {
        "benchmark": target, "model": model_name, "mode": recipe.name, "size": size, "batch": recipe.batch,
        "images_per_s": images_per_s, "ms_per_step": 1000 * seconds, "peak_memory_mb": _peak_memory_mb(dev),
        "peak_reserved_mb": _peak_reserved_mb(dev),
        **flops, "achieved_tflops": achieved, "peak_tflops": peak, "mfu": achieved / peak if peak else None,
        "steps": steps, "warmup": warmup, "warmup_s": warmup_seconds, "recipe": dataclasses.asdict(recipe),
        **environment,
    }  # fmt: skip
    del model, step
    _release(dev)
    return result


def _count_model_flops(model_name: str, size: int, folded_decoder: bool, dev: torch.device) -> dict:
    from cloudseg.models.registry import build_model
    from cloudseg.training.losses import SegmentationLoss

    model = build_model(model_name).to(dev)
    use_decoder_variant(model, folded_decoder, gather_backward=True)
    rgb, aux, _ = _inputs(size, 1, dev, torch.contiguous_format)
    return count_flops(model, rgb, aux, SegmentationLoss(LossConfig()).to(dev))


def benchmark_recipes(target: str, recipes: list[Recipe], model_name: str = "cmx_b2", size: int = 512, **options):
    """Each recipe in turn in this one process; every row's speed-up is against the first row. FLOPs are those
    of each recipe's own computation (the folded decoder does fewer)."""
    from cloudseg.models.checkpoint import default_device

    dev = default_device(options.get("device"))
    flops = {fold: _count_model_flops(model_name, size, fold, dev) for fold in {r.folded_decoder for r in recipes}}
    rows = [
        benchmark_model(target, model_name, size, recipe, flops=flops[recipe.folded_decoder], **options)
        for recipe in recipes
    ]
    for row in rows:
        row["speedup"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows


def compare(target: str, fast: Recipe, **options) -> dict:
    """The baseline and `fast` in one run, and how many times faster fast is (images per second)."""
    baseline, fast_row = benchmark_recipes(target, [BASELINE, fast], **options)
    return {"baseline": baseline, "fast": fast_row, "speedup": fast_row["speedup"]}


def format_rows(rows: list[dict]) -> str:
    """A plain-text table of benchmark rows, for people (the JSON is for programs)."""
    # memory: the peak allocated in the timed steps, and the allocator's peak reserve (GPU), which holds CUDA graphs
    header = ("recipe", "batch", "img/s", "ms/step", "TFLOP/s", "MFU", "mem MB", "rsv MB", "x")
    lines = ["{:<24} {:>5} {:>9} {:>9} {:>8} {:>6} {:>8} {:>8} {:>6}".format(*header)]
    for row in rows:
        mfu = f"{100 * row['mfu']:.1f}%" if row.get("mfu") is not None else "-"
        reserved = f"{row['peak_reserved_mb']:.0f}" if row.get("peak_reserved_mb") is not None else "-"
        lines.append(
            f"{row['mode']:<24} {row['batch']:>5} {row['images_per_s']:>9.2f} {row['ms_per_step']:>9.1f} "
            f"{row['achieved_tflops']:>8.2f} {mfu:>6} {row['peak_memory_mb']:>8.0f} {reserved:>8} "
            f"{row.get('speedup', 1.0):>6.2f}"
        )
    return "\n".join(lines)


def benchmark_scene(
    model_name: str = "cmx_b2",
    scene: int = 4096,
    tile: int = 512,
    overlap: int = 128,
    recipe: Recipe = BASELINE,
    repeats: int = 3,
    warmup: int = 1,
    device: str | torch.device | None = None,
) -> dict:
    """Sliding-window prediction of one random scene x scene pair the way `cloudseg predict` runs it: the
    predictor with the recipe's precision and compilation (which brings cudnn.benchmark on a GPU), `recipe.batch`
    tiles at a time, blended, back on the CPU. The scene starts on the CPU as uint8 pixels, as a read image
    does."""
    from cloudseg.config import Config, PredictConfig
    from cloudseg.inference.predictor import Predictor
    from cloudseg.inference.sliding import tile_starts
    from cloudseg.models.checkpoint import Release, default_device
    from cloudseg.models.registry import build_model

    dev = default_device(device)
    torch.manual_seed(0)
    model = build_model(model_name).to(dev).eval()
    use_decoder_variant(model, recipe.folded_decoder, gather_backward=True)
    cfg = PredictConfig(tile=tile, overlap=overlap, tile_batch=recipe.batch, precision="bf16" if recipe.bf16 else "32",
                        compile=bool(recipe.compile), memory_check="off")  # fmt: skip
    predictor = Predictor(model, Release.of(Config()), dev, cfg)
    rgb, aux = (torch.randint(0, 256, (1, channels, scene, scene), dtype=torch.uint8) for channels in (3, 1))
    tiles = len(tile_starts(scene, tile, overlap)) ** 2

    def step(logits=predictor.logits) -> None:
        logits(rgb, aux)

    warmup_seconds, seconds = timed_steps(step, repeats, warmup, dev)
    result = {
        "benchmark": "scene", "model": model_name, "mode": recipe.name, "scene": scene, "tile": tile,
        "overlap": overlap, "tile_batch": recipe.batch, "tiles": tiles, "seconds_per_scene": seconds,
        "megapixels_per_s": scene * scene / seconds / 1e6, "tiles_per_s": tiles / seconds,
        "peak_memory_mb": _peak_memory_mb(dev), "repeats": repeats, "warmup_s": warmup_seconds,
        "recipe": dataclasses.asdict(recipe), **_environment(dev),
    }  # fmt: skip
    del model, predictor
    _release(dev)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("target", choices=("train", "infer"), help="train: training steps; infer: inference batches")
    parser.add_argument("--model", default="cmx_b2")
    parser.add_argument("--size", type=int, default=512, help="input size; with --scene, the tile size")
    parser.add_argument("--batch", type=int, default=16, help="batch of the fast mode (baseline uses 4)")
    parser.add_argument("--mode", choices=("fast", "baseline"), default="fast")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--compare", action="store_true", help="run baseline and fast, and report the speed-up")
    how.add_argument("--ladder", action="store_true", help="baseline, then one speed-up more per row, each measured")
    how.add_argument("--profile", action="store_true", help="time per kind of block, and the costliest operators")
    how.add_argument("--scene", type=int, help="infer: sliding-window prediction of one SCENE x SCENE pair")
    parser.add_argument("--overlap", type=int, default=128, help="with --scene: tile overlap in pixels")
    parser.add_argument("--precision", choices=("auto", "32", "bf16"), default="auto", help="fast mode's")
    parser.add_argument(
        "--compile", choices=("auto", "none", "default", "max-autotune", "reduce-overhead"), default="auto",
        help="fast mode's torch.compile mode (auto: default on GPUs, none on CPUs; reduce-overhead adds CUDA "
        "graphs); with --ladder, a mode other than default adds a row",
    )  # fmt: skip
    parser.add_argument("--device", help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU")
    parser.add_argument("--batches", type=int, default=20, help="timed steps (with --scene: timed scenes)")
    parser.add_argument("--warmup", type=int, default=3)
    add_record_options(parser)
    args = parser.parse_args()
    if args.scene and args.target != "infer":
        parser.error("--scene measures sliding-window inference: use it with infer")
    if args.scene and args.overlap >= args.size:
        parser.error(f"--overlap {args.overlap} must be smaller than the tile (--size {args.size})")
    device = default_device(args.device)
    fast = fast_recipe(args.batch, device, args.precision, args.compile)
    recipe = fast if args.mode == "fast" else BASELINE
    model = {"model_name": args.model, "device": device}
    timing = {"steps": args.batches, "warmup": args.warmup, "peak_tflops": args.peak_tflops}
    if args.scene:
        result = benchmark_scene(
            scene=args.scene, tile=args.size, overlap=args.overlap, recipe=recipe, repeats=args.batches,
            warmup=args.warmup, **model,
        )  # fmt: skip
    elif args.profile:
        from profile_steps import format_profile, profile_model

        result = profile_model(args.target, size=args.size, recipe=recipe, steps=args.batches, **model)
        print(format_profile(result), file=sys.stderr)
    elif args.ladder:
        recipes = ladder(args.target, args.batch, args.compile)
        result = {"rows": benchmark_recipes(args.target, recipes, size=args.size, **model, **timing)}
        print(format_rows(result["rows"]), file=sys.stderr)
    elif args.compare:
        result = compare(args.target, fast, size=args.size, **model, **timing)
        print(format_rows([result["baseline"], result["fast"]]), file=sys.stderr)
    else:
        result = benchmark_model(args.target, size=args.size, recipe=recipe, **model, **timing)
        print(format_rows([result]), file=sys.stderr)
    report(result, args)


if __name__ == "__main__":
    main()
