"""`cloudseg benchmark`: throughput measurements written as JSON (speed is measured here, never in tests)."""

import json
import os
import platform
import resource
import time
from datetime import datetime, timezone

import torch
from torch.utils.flop_counter import FlopCounterMode

from cloudseg.config import DataConfig, LossConfig

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


def count_flops(model: torch.nn.Module, rgb: torch.Tensor, aux: torch.Tensor, loss=None) -> dict:
    """FLOPs per image of the forward pass (FlopCounterMode) and of a training step.

    The training step is taken as 3 x forward (the backward of every conv and matmul costs twice its forward),
    the usual convention for MFU. FlopCounterMode's own count of the backward is kept as
    `flops_train_counted_per_image` but not used: in torch 2.13 it counts the backward of grouped (depthwise)
    convolutions as if they were not grouped (76 MFLOP instead of 1.2 for a 128-channel 3x3 depthwise conv at
    16²), which would inflate the MFU of MiT's Mix-FFN several times.
    """
    batch = rgb.shape[0]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(rgb, aux)
    forward = counter.get_total_flops() / batch
    with FlopCounterMode(display=False) as counter:
        logits = model(rgb, aux)
        target = torch.zeros(logits.shape[0], *logits.shape[2:], dtype=torch.long, device=logits.device)
        (loss(logits, target)[0] if loss else logits.float().mean()).backward()
    model.zero_grad(set_to_none=True)
    return {
        "flops_forward_per_image": forward,
        "flops_train_per_image": 3 * forward,
        "flops_train_counted_per_image": counter.get_total_flops() / batch,
    }


def benchmark_model(
    target: str,
    model_name: str = "cmx_b2",
    size: int = 512,
    batch: int = 16,
    mode: str = "fast",
    steps: int = 20,
    warmup: int = 5,
    device: str | None = None,
    peak_tflops: float | None = None,
    compile_model: bool | None = None,
) -> dict:
    """Times training steps (`target="train"`) or inference batches (`"infer"`) of a model on random inputs.

    `baseline` runs as the reference implementation did: fp32, eager, NCHW, unfused AdamW, batch 4. `fast` uses
    bf16 autocast and fused AdamW on GPUs, channels_last, and torch.compile (on GPUs unless told otherwise).
    """
    from cloudseg.models.checkpoint import default_device
    from cloudseg.models.registry import build_model
    from cloudseg.training.losses import SegmentationLoss

    dev = default_device(device)
    fast = mode == "fast"
    batch = batch if fast else 4
    torch.manual_seed(0)
    model = build_model(model_name).to(dev)
    model.train(target == "train")
    memory_format = torch.channels_last if fast else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    rgb = torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=memory_format)
    aux = torch.randn(batch, 1, size, size, device=dev).contiguous(memory_format=memory_format)
    mask = torch.randint(0, 4, (batch, size, size), device=dev)
    loss_fn = SegmentationLoss(LossConfig()).to(dev)
    flops = count_flops(model, rgb[:1], aux[:1], loss_fn)
    network = model
    if compile_model if compile_model is not None else (fast and dev.type == "cuda"):
        network = torch.compile(model)
    autocast = torch.autocast(dev.type, torch.bfloat16, enabled=fast and dev.type == "cuda")
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, fused=fast and dev.type == "cuda", foreach=False if not fast else None
    )

    def step() -> None:
        if target == "train":
            with autocast:
                loss, _ = loss_fn(network(rgb, aux), mask)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode(), autocast:
                network(rgb, aux)

    for _ in range(warmup):
        step()
    _synchronize(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(dev)
    seconds = (time.perf_counter() - started) / steps
    images_per_s = batch / seconds
    per_image = flops["flops_train_per_image" if target == "train" else "flops_forward_per_image"]
    environment = _environment(dev)
    peak = peak_tflops or (known_peak(environment["device"]) if dev.type == "cuda" else None)
    achieved = per_image * images_per_s / 1e12
    return {
        "benchmark": target, "model": model_name, "mode": mode, "size": size, "batch": batch,
        "images_per_s": images_per_s, "ms_per_step": 1000 * seconds, "peak_memory_mb": _peak_memory_mb(dev),
        **flops, "achieved_tflops": achieved, "peak_tflops": peak, "mfu": achieved / peak if peak else None,
        "steps": steps, "warmup": warmup, "compiled": network is not model, **environment,
    }  # fmt: skip


def compare(target: str, **options) -> dict:
    """Baseline and fast in one run, and how many times faster fast is (images per second)."""
    baseline = benchmark_model(target, mode="baseline", **options)
    fast = benchmark_model(target, mode="fast", **options)
    return {"baseline": baseline, "fast": fast, "speedup": fast["images_per_s"] / baseline["images_per_s"]}


def benchmark_data(cfg: DataConfig, batches: int = 20, warmup: int = 3) -> dict:
    """Training-loader throughput with the full augmentation: images/s overall and per worker."""
    from cloudseg.data.datamodule import CloudDataModule

    module = CloudDataModule(cfg)
    module.setup("fit")
    loader = module.train_dataloader()
    images, started = 0, None
    iterator = iter(loader)
    for step in range(warmup + batches):
        try:
            batch = next(iterator)
        except StopIteration:  # a small dataset: start another epoch
            iterator = iter(loader)
            batch = next(iterator)
        if step == warmup - 1:
            started = time.perf_counter()
        elif step >= warmup:
            images += batch["rgb"].shape[0]
    seconds = time.perf_counter() - started
    workers = cfg.num_workers
    return {
        "benchmark": "data",
        "images_per_s": images / seconds,
        "images_per_s_per_worker": images / seconds / max(workers, 1),
        "ms_per_batch": 1000 * seconds / batches,
        "batch_size": cfg.batch_size,
        "crop_size": cfg.augment.crop_size,
        "num_workers": workers,
        "timed_batches": batches,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_result(result: dict, path: str | None) -> str:
    text = json.dumps(result, indent=2)
    if path:
        from cloudseg.files import atomic_path

        with atomic_path(path) as temporary:
            temporary.write_text(text + "\n")
    return text
