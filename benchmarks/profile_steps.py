"""Where a training step's or inference batch's time goes (`python benchmarks/speed.py ... --profile`): forward time
per kind of block, timed eagerly, and the operators (kernels on a GPU) that take the most time over whole steps,
grouped by kind."""

import dataclasses
import time

import torch
from speed import BASELINE, Recipe, _environment, _release, _synchronize, build_step

# The blocks whose forward time `profile_model` reports, by class name; they do not nest inside each other.
PROFILE_REGIONS = {
    "OverlapPatchEmbed": "MiT patch embedding",
    "EfficientSelfAttention": "MiT efficient attention",
    "MixFFN": "MiT Mix-FFN",
    "FeatureRectifyModule": "FRM",
    "FeatureFusionModule": "FFM",
    "AllMLPDecoder": "decoder",
}


def _region_times(model: torch.nn.Module, dev: torch.device) -> tuple[dict, list]:
    """Forward hooks that add each region's time, the device synchronised on entry and exit, into a dict."""
    seconds: dict[str, float] = {}
    started: dict[int, float] = {}
    handles = []

    def enter(module, _inputs):
        _synchronize(dev)
        started[id(module)] = time.perf_counter()

    def leave(module, _inputs, _output):
        _synchronize(dev)
        region = PROFILE_REGIONS[type(module).__name__]
        seconds[region] = seconds.get(region, 0.0) + time.perf_counter() - started.pop(id(module))

    for module in model.modules():
        if type(module).__name__ in PROFILE_REGIONS:
            handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return seconds, handles


def profile_model(
    target: str,
    model_name: str = "cmx_b2",
    size: int = 512,
    recipe: Recipe = BASELINE,
    steps: int = 3,
    warmup: int = 2,
    device: str | torch.device | None = None,
    top: int = 25,
) -> dict:
    """Where the time goes, two ways. Forward time per kind of block (MiT attention, Mix-FFN, FRM, FFM, decoder,
    ...), timed eagerly with a device sync around each block; and the operators (kernels on a GPU) that take
    the most time over whole steps as the recipe runs them, compiled or not, from torch.profiler: kernels on a GPU,
    operators on a CPU."""
    from torch.profiler import ProfilerActivity, profile

    from cloudseg.models.checkpoint import default_device

    dev = default_device(device)
    eager = dataclasses.replace(recipe, compile=None)
    model, step = build_step(target, model_name, size, eager, dev)
    seconds, handles = _region_times(model, dev)
    forward = model.forward
    total = [0.0]

    def timed_forward(*args):
        _synchronize(dev)
        started = time.perf_counter()
        out = forward(*args)
        _synchronize(dev)
        total[0] += time.perf_counter() - started
        return out

    model.forward = timed_forward
    for _ in range(warmup):
        step()
    seconds.clear()
    total[0] = 0.0
    for _ in range(steps):
        step()
    for handle in handles:
        handle.remove()
    regions = {name: 1000 * value / steps for name, value in sorted(seconds.items(), key=lambda kv: -kv[1])}
    forward_ms = 1000 * total[0] / steps
    regions["other (norms, residuals, upsampling)"] = forward_ms - sum(regions.values())
    del model, step

    model, step = build_step(target, model_name, size, recipe, dev)
    for _ in range(warmup):
        step()
    _synchronize(dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        started = time.perf_counter()
        for _ in range(steps):
            step()
        _synchronize(dev)
        step_ms = 1000 * (time.perf_counter() - started) / steps
    gpu = dev.type == "cuda"
    key = "self_device_time_total" if gpu else "self_cpu_time_total"
    events = sorted(timed_events(profiler.key_averages(), gpu), key=lambda e: -getattr(e, key))
    busy = sum(getattr(e, key) for e in events)
    families: dict[str, float] = {}
    for e in events:
        family = kernel_family(e.key)
        families[family] = families.get(family, 0.0) + getattr(e, key) / 1000 / steps
    operators = [
        {"name": e.key, "calls_per_step": e.count / steps, "ms_per_step": getattr(e, key) / 1000 / steps,
         "share": getattr(e, key) / busy if busy else None}
        for e in events[:top]
    ]  # fmt: skip
    del model, step
    _release(dev)
    return {
        "benchmark": "profile", "target": target, "model": model_name, "size": size, "batch": recipe.batch,
        "recipe": dataclasses.asdict(recipe), "forward_ms_eager": forward_ms, "forward_regions_ms": regions,
        "operators_by": "kernel device time" if gpu else "operator CPU time",
        "operators_total_ms_per_step": busy / 1000 / steps, "step_ms_profiled": step_ms,
        "families_ms_per_step": dict(sorted(families.items(), key=lambda kv: -kv[1])), "operators": operators,
        **_environment(dev),
    }  # fmt: skip


def timed_events(events, gpu: bool) -> list:
    """The profiler's events whose own times add up to the device's (on a GPU) or the host's busy time. On a GPU
    only kernels and copies count: an operator's self device time is its kernels' time again, and a marked range
    (the optimiser's `Optimizer.step#AdamW.step`, say) spans kernels that are counted already."""
    if not gpu:
        return list(events)
    return [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA and not e.is_user_annotation]


# Kinds of kernel (on a CPU, of operator), by name, first match. The order matters: inductor's kernels are named
# after the operations they fuse (a convolution's bias gradient, say), and cuDNN's implicit-GEMM convolutions
# also say "gemm".
KERNEL_FAMILIES = (
    ("inductor pointwise", ("triton_poi",)),
    ("inductor reduction", ("triton_red", "triton_per")),
    ("attention", ("sdpa", "flash", "fmha", "attention")),
    ("convolution", ("conv", "fprop", "dgrad", "wgrad")),
    ("matmul", ("gemm", "nvjet", "cutlass", "cublas", "xmma", "triton_tem", "aten::mm", "aten::addmm", "aten::bmm")),
    ("optimizer", ("adam",)),
    ("copies", ("memcpy", "memset", "copy")),
)


def kernel_family(name: str) -> str:
    lowered = name.lower()
    return next((family for family, keys in KERNEL_FAMILIES if any(k in lowered for k in keys)), "other")


def format_profile(result: dict) -> str:
    """The profile's three tables as plain text."""

    def shares(times: dict[str, float], total: float) -> list[str]:
        return [f"  {name:<40} {ms:>9.2f} ms {100 * ms / total:>5.1f}%" for name, ms in times.items()]

    forward = result["forward_ms_eager"]
    lines = [f"forward, eager, per kind of block ({forward:.1f} ms per batch of {result['batch']}):"]
    lines += shares(result["forward_regions_ms"], forward)
    busy, step = result["operators_total_ms_per_step"], result["step_ms_profiled"]
    lines.append(f"{result['operators_by']} by kind ({busy:.1f} ms of a {step:.1f}-ms step, profiled):")
    lines += shares(result["families_ms_per_step"], busy)
    lines.append(f"operators by {result['operators_by']} ({busy:.1f} ms per step):")
    lines += [
        f"  {op['name'][:60]:<60} {op['calls_per_step']:>6.0f} {op['ms_per_step']:>9.2f} ms {100 * op['share']:>5.1f}%"
        for op in result["operators"]
    ]
    return "\n".join(lines)
