"""Does the device compute the same function? cloudseg's input normalisation, model and loss on the GPU (fp32, bf16
autocast, compiled) against float64 on the CPU, on fresh random inputs, for the eval-mode forward and for a whole
training step (its loss and every parameter's gradient); prints each relative error and PASS or FAIL.

    python benchmarks/gpu_parity.py --model cmx_b2 [--size 256] [--device cpu] [--no-compile] [--record NAME]

Bounds: fp32 1e-3 (TF32 switched off); bf16 3e-2 for logits and the loss (bf16 operands usually give 1e-3 to
1e-2), 1e-1 for gradients: a backward pass compounds its forward's rounding, and OHEM's choice of the hardest
pixels moves with it (CMX-B0 at 64² on a CPU: 5.5e-2). A training step runs without
stochastic depth and dropout, so the reference and the device compute the same function.
"""

import argparse
import copy
import sys

import torch
from records import add_record_options, save_record, write_record

from cloudseg.config import LossConfig
from cloudseg.data.dataset import normalise
from cloudseg.models.checkpoint import default_device
from cloudseg.models.registry import build_model
from cloudseg.schema import RGB_NORM
from cloudseg.training.losses import SegmentationLoss


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    value = value.double().cpu()
    return ((value - reference).norm() / reference.norm()).item() if torch.isfinite(value).all() else float("inf")


def training_step(
    network: torch.nn.Module, loss_fn: SegmentationLoss, rgb, aux, mask, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step's loss and every parameter's gradient, flattened into one vector. Norm layers run in
    training mode (batch statistics), as in training."""
    parameters = [p for p in network.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.grad = None
    network.train()
    with torch.autocast(rgb.device.type, torch.bfloat16, enabled=bf16):
        loss = loss_fn(network(rgb, aux), mask)[0]
    loss.backward()
    network.eval()
    gradients = torch.cat([p.grad.flatten() for p in parameters if p.grad is not None])
    return loss.detach(), gradients


def main() -> int:
    parser = argparse.ArgumentParser(description="cloudseg on a device against float64 on the CPU")
    parser.add_argument("--model", default="cmx_b2")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--device")
    parser.add_argument("--no-compile", action="store_true")
    add_record_options(parser)
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
    model = build_model(args.model, drop_path_rate=0.0, decoder_dropout=0.0).eval().double()
    with torch.no_grad():
        reference = model(rgb.double(), aux.double())
        reference_loss = loss_fn(reference, mask)[0]
    reference_step = training_step(copy.deepcopy(model), loss_fn, rgb.double(), aux.double(), mask, bf16=False)
    model = model.float().to(device)
    network = model if args.no_compile else torch.compile(model, dynamic=False)
    inputs = rgb.to(device), aux.to(device), mask.to(device)

    def logits(net: torch.nn.Module, bf16: bool) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            return net(rgb.to(device), aux.to(device))

    errors = {}

    def check(name: str, error: float, bound: float) -> None:  # printed at once: a later compile may time out
        errors[name] = {"relative_error": error, "bound": bound, "passed": error < bound}
        where = f"{args.model} {args.size}² on {device.type}"
        print(f"{where}: {name:<34} relative error {error:.2e} (< {bound:.0e}) {'PASS' if error < bound else 'FAIL'}")
        if args.json:  # after every check, so a stage stopped by its time limit keeps what it measured
            save_record({"model": args.model, "size": args.size, "checks": errors}, args.json)

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
    steps = {"fp32": training_step(model, loss_fn, *inputs, bf16=False)}
    steps["bf16" if network is model else "bf16, compiled"] = training_step(network, loss_fn, *inputs, bf16=True)
    for name, (loss, gradients) in steps.items():
        check(f"training step {name}: loss", relative_error(loss, reference_step[0]), 1e-3 if name == "fp32" else 3e-2)
        bound = 1e-3 if name == "fp32" else 1e-1
        check(f"training step {name}: gradients", relative_error(gradients, reference_step[1]), bound)
    if args.record:
        write_record(args.record, {"model": args.model, "size": args.size, "checks": errors})
    return int(not all(e["passed"] for e in errors.values()))


if __name__ == "__main__":
    sys.exit(main())
