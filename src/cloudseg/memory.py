"""Peak memory of a training step or a prediction, estimated before the work starts, against what the device has.

The model runs once on PyTorch's meta device (shapes without data: no memory, no arithmetic), and every tensor
storage it creates is counted from its creation until it is freed, so the estimate sees the activations a training
step keeps for its backward pass, the attention maps that grow with the square of the image's pixels, and what
inference frees as it goes. benchmarks/memory_estimate.py measures the estimate against real peaks.
"""

import logging
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from cloudseg.config import ModelConfig
from cloudseg.errors import ResourceError

log = logging.getLogger("cloudseg")

# Factors on the traced activations, calibrated by benchmarks/memory_estimate.py against peaks measured on a CPU
# (docs/RELIABILITY.md): a training step's backward pass holds gradients of activations beside the activations;
# a forward pass's kernels need scratch space besides their outputs; under bf16 or fp16 autocast the matmuls' and
# convolutions' outputs are half width while normalisations, softmax and the weights' casts are not.
BACKWARD_FACTOR = 1.6
FORWARD_FACTOR = 1.25
HALF_PRECISION_FACTOR = 0.8
OPTIMIZER_COPIES = 4  # fp32 weights, their gradients and AdamW's two moments


class LiveStorage(TorchFunctionMode):
    """Counts the bytes of the tensor storages alive during the block, and their peak."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.seen: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for tensor in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(tensor, torch.Tensor):
                self._count(tensor.untyped_storage())
        return result

    def _count(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        if key in self.seen:
            return
        self.seen.add(key)
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self.seen.discard(key)
        self.live -= size


def model_bytes(model: ModelConfig, side: int, batch: int, training: bool) -> tuple[int, int]:
    """(parameter bytes, peak bytes of the activations) of one forward pass of `batch` images of side² pixels, with
    what a training step keeps for its backward pass."""
    from cloudseg.models.registry import build_model

    with torch.device("meta"):
        network = build_model(model, pretrained=None, drop_path_rate=0.0)
        network.train(training)
        rgb = torch.empty(batch, 3, side, side)
        aux = torch.empty(batch, model.aux_channels, side, side)
    parameters = sum(p.numel() * p.element_size() for p in network.parameters())
    with torch.set_grad_enabled(training), LiveStorage() as counter:
        network(rgb, aux)
    return parameters, counter.peak


def training_bytes(model: ModelConfig, crop: int, batch: int, precision: str) -> int:
    """Peak memory of a training step of `batch` crops of crop² pixels in one process."""
    parameters, activations = model_bytes(model, crop, batch, True)
    half = precision in ("bf16-mixed", "16-mixed")
    return round(OPTIMIZER_COPIES * parameters + activations * BACKWARD_FACTOR * (HALF_PRECISION_FACTOR if half else 1))


def inference_bytes(models: list[ModelConfig], side: int, batch: int, bf16: bool) -> int:
    """Peak memory of a forward pass of `batch` images of side² pixels through the models (an ensemble)."""
    traced = [model_bytes(model, side, batch, False) for model in models]
    activations = max(a for _, a in traced) * FORWARD_FACTOR * (HALF_PRECISION_FACTOR if bf16 else 1)
    return round(sum(p for p, _ in traced) + activations)


def _cgroup_room() -> int | None:
    """Bytes a container's memory limit still allows (cgroup v2 or v1), if one is set."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit, usage = (Path(f).read_text().strip() for f in (limit_file, usage_file))
        except OSError:
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return int(limit) - int(usage)
    return None


def available_bytes(device: torch.device) -> int | None:
    """Memory free for this process on `device`: on a GPU what the driver reports; in main memory what Linux
    reports as available, within a container's limit. None where that is not known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        free = next(int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):  # not Linux
        free = None
    known = [x for x in (free, _cgroup_room()) if x is not None]
    return min(known) if known else None


@dataclass(frozen=True)
class MemoryCheck:
    """An estimate against the memory free on a device. `mode` (the setting named `switch`) says what happens when
    it will not fit: refuse (a ResourceError naming the `settings` to lower), warn, or nothing (off)."""

    what: str
    needed: int
    device: torch.device
    settings: str
    switch: str

    def apply(self, mode: str) -> None:
        free = available_bytes(self.device) if mode != "off" else None
        if free is None:
            return
        where = "GPU memory" if self.device.type == "cuda" else "main memory"
        summary = f"{self.what} needs about {self.needed / 2**30:.1f} GiB; {free / 2**30:.1f} GiB of {where} is free"
        if self.needed > free and mode == "refuse":
            raise ResourceError(f"{summary}: lower {self.settings}, or set --{self.switch} warn to try anyway")
        if self.needed > 0.8 * free:
            log.warning("%s: %s", summary, "it may run out of memory" if self.needed > free else "close to the limit")
