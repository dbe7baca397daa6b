"""cloudseg's peak-memory estimate (`cloudseg.memory`) against the peak measured on this machine, for a handful of
training and inference settings. Each setting runs in a fresh process: on a CPU the measure is the growth of the
resident set from just before the model is built to the peak of two training steps (forward, loss, backward,
AdamW) or two forward passes; on a GPU it is the allocator's peak.

    python benchmarks/memory_estimate.py              # writes benchmarks/results/memory_estimate_<device>.json
"""

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import device, write_record

# (kind, model, side, batch, precision)
SETTINGS = [
    ("train", "cmx_b0", 128, 4, "32"),
    ("train", "cmx_b0", 256, 4, "32"),
    ("train", "cmx_b0", 256, 8, "32"),
    ("train", "cmx_b0", 384, 2, "32"),
    ("train", "cmx_b0", 256, 4, "bf16-mixed"),
    ("train", "segformer_b0", 256, 8, "32"),
    ("train", "cmx_b2", 256, 2, "32"),
    ("infer", "cmx_b0", 512, 4, "32"),
    ("infer", "cmx_b0", 512, 16, "32"),
    ("infer", "cmx_b0", 1024, 1, "32"),
    ("infer", "cmx_b0", 512, 4, "bf16"),
    ("infer", "cmx_b2", 512, 4, "32"),
]


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(kind: str, name: str, side: int, batch: int, precision: str) -> dict:
    """Runs in its own process: the estimate, then the measured peak."""
    import torch

    from cloudseg.config import LossConfig, ModelConfig
    from cloudseg.memory import inference_bytes, training_bytes
    from cloudseg.models.registry import build_model
    from cloudseg.training.losses import SegmentationLoss

    model_cfg = ModelConfig(name=name)
    half = precision in ("bf16", "bf16-mixed")
    if kind == "train":
        estimate = training_bytes(model_cfg, side, batch, precision)
    else:
        estimate = inference_bytes([model_cfg], side, batch, half)
    torch.manual_seed(0)
    rgb, aux = torch.rand(batch, 3, side, side), torch.rand(batch, 1, side, side)
    target = torch.randint(0, 4, (batch, side, side))
    gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if gpu else "cpu")
    rgb, aux, target = rgb.to(dev), aux.to(dev), target.to(dev)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resident_bytes()
    model = build_model(name).to(dev)
    autocast = torch.autocast(dev.type, torch.bfloat16, enabled=half)
    if kind == "train":
        loss_fn = SegmentationLoss(LossConfig()).to(dev)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        for _ in range(2):
            with autocast:
                loss, _ = loss_fn(model(rgb, aux), target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    else:
        model = model.eval().to(memory_format=torch.channels_last)
        rgb, aux = (t.contiguous(memory_format=torch.channels_last) for t in (rgb, aux))
        with torch.no_grad(), autocast:
            for _ in range(2):
                model(rgb, aux)
    if gpu:
        measured = torch.cuda.max_memory_allocated() - base
    else:
        measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"kind": kind, "model": name, "side": side, "batch": batch, "precision": precision,
            "estimate_mib": round(estimate / 2**20), "measured_mib": round(measured / 2**20),
            "error": round(estimate / measured - 1, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # one setting, as JSON, in a process of its own
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*json.loads(args.one))))
        return
    rows = []
    for setting in SETTINGS:
        one = [sys.executable, __file__, "--one", json.dumps(setting)]
        row = json.loads(subprocess.run(one, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        rows.append(row)
        setting = f"{row['kind']:<6} {row['model']:<13} {row['side']:>5}² x {row['batch']:<3} {row['precision']:<11}"
        mib = f"estimate {row['estimate_mib']:>6} MiB  measured {row['measured_mib']:>6} MiB"
        print(f"{setting} {mib}  {row['error']:+.0%}")
    worst = max(abs(r["error"]) for r in rows)
    print(f"largest error {worst:.0%}")
    name = "memory_estimate_" + ("gpu" if "CPU" not in device() else "cpu")
    print(f"wrote {write_record(name, {'rows': rows, 'largest_error': worst})}")


if __name__ == "__main__":
    main()
