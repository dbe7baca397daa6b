"""`cloudseg benchmark train|infer` in a tiny smoke configuration: well-formed results, never a speed."""

import json

import pytest

from cloudseg.benchmark import known_peak
from cloudseg.cli.main import main


@pytest.mark.parametrize("target", ["train", "infer"])
def test_compare_writes_baseline_fast_and_speedup(target, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["benchmark", target, "--model", "cmx_b0", "--size", "64", "--batch", "2", "--batches", "1",
                 "--warmup", "1", "--device", "cpu", "--compare", "--json", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert result["baseline"]["batch"] == 4 and result["fast"]["batch"] == 2
    for run in (result["baseline"], result["fast"]):
        assert run["benchmark"] == target and run["images_per_s"] > 0 and run["ms_per_step"] > 0
        assert run["flops_train_per_image"] == 3 * run["flops_forward_per_image"] > 0
        assert run["mfu"] is None and run["peak_memory_mb"] > 0  # no known peak for a CPU
    assert result["speedup"] > 0


def test_known_peaks_match_device_names():
    assert known_peak("NVIDIA H100 80GB HBM3") == 989.4
    assert known_peak("NVIDIA H100 PCIe") == 756.0
    assert known_peak("Intel Xeon") is None


def test_depthwise_backward_is_overcounted_by_the_flop_counter_so_mfu_does_not_use_it():
    # Pins the torch behaviour count_flops works around; if torch fixes it, the workaround can go.
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    conv = torch.nn.Conv2d(128, 128, 3, padding=1, groups=128)
    with FlopCounterMode(display=False) as counter:
        conv(torch.randn(1, 128, 16, 16, requires_grad=True)).sum().backward()
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    assert counts["aten.convolution_backward"] > 10 * 2 * counts["aten.convolution"]
