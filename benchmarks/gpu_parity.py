"""Does the device compute the same function? cloudseg's input normalisation, model and loss on the GPU (fp32, bf16
autocast, compiled) against float64 on the CPU, on fresh random inputs; prints each relative error and PASS or FAIL.

    python benchmarks/gpu_parity.py --model cmx_b2 [--size 256] [--device cpu] [--no-compile]

Bounds: fp32 1e-3 (TF32 switched off), bf16 3e-2 (bf16 operands usually give 1e-3 to 1e-2).
"""

import argparse
import sys

import torch

from cloudseg.config import LossConfig
from cloudseg.data.dataset import normalise
from cloudseg.models.checkpoint import default_device
from cloudseg.models.registry import build_model
from cloudseg.schema import RGB_NORM
from cloudseg.training.losses import SegmentationLoss


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    value = value.double().cpu()
    return ((value - reference).norm() / reference.norm()).item() if torch.isfinite(value).all() else float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description="cloudseg on a device against float64 on the CPU")
    parser.add_argument("--model", default="cmx_b2")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--device")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    device = default_device(args.device)
    torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 here (cuDNN convolutions default to TF32)
    torch.backends.cuda.matmul.allow_tf32 = False
    generator = torch.Generator().manual_seed(torch.seed() % 2**31)  # fresh inputs every run
    rgb = torch.randn(2, 3, args.size, args.size, generator=generator)
    aux = torch.randn(2, 1, args.size, args.size, generator=generator)
    mask = torch.randint(0, 4, (2, args.size, args.size), generator=generator)
    mask[0, :8] = 255  # some ignored pixels
    loss_fn = SegmentationLoss(LossConfig(ohem=0.7, dice=0.3))
    model = build_model(args.model).eval().double()
    with torch.no_grad():
        reference = model(rgb.double(), aux.double())
        reference_loss = loss_fn(reference, mask)[0]
    model = model.float().to(device)
    network = model if args.no_compile else torch.compile(model, dynamic=False)

    def logits(net: torch.nn.Module, bf16: bool) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            return net(rgb.to(device), aux.to(device))

    failed = False

    def check(name: str, error: float, bound: float) -> None:  # printed at once: a later compile may time out
        nonlocal failed
        failed |= not error < bound
        where = f"{args.model} {args.size}² on {device.type}"
        print(f"{where}: {name:<26} relative error {error:.2e} (< {bound:.0e}) {'PASS' if error < bound else 'FAIL'}")

    pixels = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=generator)
    mean, std = (torch.tensor(v, dtype=torch.float64).view(-1, 1, 1) for v in (RGB_NORM.mean, RGB_NORM.std))
    normalised = normalise(pixels.to(device), RGB_NORM)  # batches arrive as uint8 and are normalised there
    check("input normalisation", relative_error(normalised, (pixels.double() / 255 - mean) / std), 1e-6)
    fp32 = logits(model, bf16=False)
    check("fp32", relative_error(fp32, reference), 1e-3)
    check("loss (OHEM + Dice), fp32", relative_error(loss_fn(fp32, mask.to(device))[0], reference_loss), 1e-3)
    check("bf16 autocast", relative_error(logits(model, bf16=True), reference), 3e-2)
    if network is not model:
        check("bf16 autocast, compiled", relative_error(logits(network, bf16=True), reference), 3e-2)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
