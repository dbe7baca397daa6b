"""benchmarks/speed.py and benchmarks/loader.py in tiny smoke configurations: well-formed results, never a speed."""

import json
import sys
import types
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # they import each other by name
import loader
import speed
from profile_steps import kernel_family, timed_events
from speed import count_flops, format_rows, known_peak

TINY = ["--model", "cmx_b0", "--size", "64", "--batch", "2", "--batches", "1", "--warmup", "1", "--device", "cpu"]


def script(module, monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *args])
    module.main()


def run(capsys, monkeypatch, tmp_path, *args):
    out = tmp_path / "bench.json"
    script(speed, monkeypatch, *args, *TINY, "--json", str(out))
    record, printed = json.loads(out.read_text()), json.loads(capsys.readouterr().out)
    provenance = {"command", "commit", "versions", "device", "date"}  # the record's own, which no figure overrides
    assert {key: record[key] for key in printed if key not in provenance} == {
        key: value for key, value in printed.items() if key not in provenance
    }  # the figures, with where they came from
    assert record["command"].startswith("python speed.py") and provenance <= set(record)
    return record


def assert_well_formed(row, target, batch):
    assert row["benchmark"] == target and row["batch"] == batch and row["images_per_s"] > 0 and row["ms_per_step"] > 0
    assert row["flops_train_per_image"] == 3 * row["flops_forward_per_image"] > 0
    assert row["mfu"] is None and row["peak_memory_mb"] > 0  # no known peak for a CPU


@pytest.mark.parametrize("target", ["train", "infer"])
def test_compare_writes_baseline_fast_and_speedup(target, tmp_path, capsys, monkeypatch):
    result = run(capsys, monkeypatch, tmp_path, target, "--compare")
    assert_well_formed(result["baseline"], target, 4)
    assert_well_formed(result["fast"], target, 2)
    assert result["fast"]["recipe"]["channels_last"] and result["fast"]["recipe"]["compile"] is None  # CPU: no
    assert result["speedup"] == result["fast"]["images_per_s"] / result["baseline"]["images_per_s"]


def test_ladder_switches_on_one_speed_up_per_row(tmp_path, capsys, monkeypatch):
    rows = run(capsys, monkeypatch, tmp_path, "train", "--ladder", "--compile", "none")["rows"]
    assert [row["mode"] for row in rows] == [
        "baseline", "+ bf16 autocast", "+ channels_last", "+ fused AdamW", "+ batch 2", "+ folded decoder",
        "+ matmul upsampling bwd", "+ cudnn.benchmark",
    ]  # fmt: skip
    switched = [{k for k, v in row["recipe"].items() if v != rows[0]["recipe"][k]} - {"name"} for row in rows]
    assert switched == [set(), {"bf16"}, {"bf16", "channels_last"}, {"bf16", "channels_last", "fused_adamw"},
                        {"bf16", "channels_last", "fused_adamw", "batch"},
                        {"bf16", "channels_last", "fused_adamw", "batch", "folded_decoder"},
                        {"bf16", "channels_last", "fused_adamw", "batch", "folded_decoder",
                         "gather_backward"},
                        {"bf16", "channels_last", "fused_adamw", "batch", "folded_decoder",
                         "gather_backward", "cudnn_benchmark"}]  # fmt: skip
    for row in rows:
        assert_well_formed(row, "train", row["recipe"]["batch"])
    # FLOPs are each recipe's own: the folded decoder computes the same logits with fewer
    assert rows[-3]["flops_forward_per_image"] < 0.9 * rows[-4]["flops_forward_per_image"]
    assert rows[0]["speedup"] == 1.0


def test_scene_times_sliding_windows_over_every_tile(tmp_path, capsys, monkeypatch):
    result = run(capsys, monkeypatch, tmp_path, "infer", "--scene", "160", "--overlap", "16")
    assert result["tiles"] == 9 and result["tile"] == 64  # starts 0, 48, 96 on each axis
    assert result["seconds_per_scene"] > 0
    assert result["megapixels_per_s"] == pytest.approx(160 * 160 / result["seconds_per_scene"] / 1e6)


def test_profile_splits_the_forward_into_blocks_and_ranks_operators(tmp_path, capsys, monkeypatch):
    result = run(capsys, monkeypatch, tmp_path, "train", "--profile")
    regions = result["forward_regions_ms"]
    assert {"MiT efficient attention", "MiT Mix-FFN", "FRM", "FFM", "decoder"} <= regions.keys()
    assert sum(regions.values()) == pytest.approx(result["forward_ms_eager"])
    assert all(ms > 0 for name, ms in regions.items() if not name.startswith("other"))
    shares = [op["share"] for op in result["operators"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1
    families = result["families_ms_per_step"]
    assert sum(families.values()) == pytest.approx(result["operators_total_ms_per_step"])
    assert {"matmul", "convolution", "attention"} <= families.keys()  # CMX's operators on a CPU
    assert result["step_ms_profiled"] > 0


@pytest.mark.parametrize(
    ("name", "family"),
    [  # kernel names from the CMX-B2 profiles on an H200 (docs/PERFORMANCE.md) and CPU operator names
        ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64", "attention"),
        ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "convolution"),
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1", "matmul"),
        ("triton_poi_fused__native_batch_norm_legit_functional__to_copy_add_mul_0", "inductor pointwise"),
        ("triton_red_fused_native_layer_norm_backward_12", "inductor reduction"),
        ("triton_poi_fused_convolution_backward_gelu_3", "inductor pointwise"),
        ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor>", "optimizer"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
        ("aten::mkldnn_convolution", "convolution"),
        ("aten::addmm", "matmul"),
        ("Memcpy HtoD (Pageable -> Device)", "copies"),
        ("dgrad2d_c1_k1_nhwc_specialized", "convolution"),  # the H100's (2026-11-26)
        ("nvjet_sm90_tst_64x512_64x2_1x2_h_bz_coopB_NNT", "matmul"),
        ("aten::gelu", "other"),
    ],
)
def test_kernels_are_grouped_by_kind(name, family):
    assert kernel_family(name) == family


def test_a_gpu_profile_counts_kernels_once_and_not_the_ranges_marked_around_them():
    def event(name, device, annotation=False):
        device_type = getattr(torch.autograd.DeviceType, device)
        return types.SimpleNamespace(key=name, device_type=device_type, is_user_annotation=annotation)

    events = [
        event("multi_tensor_apply_kernel<FusedAdamMathFunctor>", "CUDA"),
        event("Optimizer.step#AdamW.step", "CUDA", annotation=True),  # spans the kernel above on the GPU's timeline
        event("aten::_fused_adamw_", "CPU"),
        event("Memcpy HtoD (Pageable -> Device)", "CUDA"),
    ]
    assert [e.key for e in timed_events(events, gpu=True)] == [events[0].key, events[3].key]
    assert timed_events(events, gpu=False) == events


def test_the_table_shows_the_reserve_that_holds_cuda_graphs_where_there_is_one():
    row = {"mode": "fast", "batch": 16, "images_per_s": 255.7, "ms_per_step": 62.6, "achieved_tflops": 73.8,
           "mfu": 0.0746, "peak_memory_mb": 1063.9, "peak_reserved_mb": 15360.0}  # fmt: skip
    gpu, cpu = format_rows([row, {**row, "mfu": None, "peak_reserved_mb": None}]).splitlines()[1:]
    assert gpu.split() == ["fast", "16", "255.70", "62.6", "73.80", "7.5%", "1064", "15360", "1.00"]
    assert cpu.split()[5:8] == ["-", "1064", "-"]


def test_scene_is_for_inference_only(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        script(speed, monkeypatch, "train", "--scene", "256", *TINY)
    assert exit_info.value.code == 2 and "--scene measures sliding-window inference" in capsys.readouterr().err


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


def test_attention_flops_are_counted_on_the_cpu_as_on_a_gpu():
    class Attention(torch.nn.Module):  # two heads of 16 queries over 8 keys, 4 channels each
        def forward(self, rgb, aux):
            q, k = rgb.view(1, 2, 16, 4), aux.view(1, 2, 8, 4)
            return torch.nn.functional.scaled_dot_product_attention(q, k, k)

    rgb, aux = torch.randn(1, 128, requires_grad=True), torch.randn(1, 64, requires_grad=True)
    flops = count_flops(Attention(), rgb, aux)["flops_forward_per_image"]
    assert flops == 2 * (2 * 2 * 16 * 8 * 4)  # Q Kᵀ and the weighted sum of V: 2 FLOPs per multiply-add each


def test_the_loader_benchmark_writes_well_formed_json(synth_root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench.json"
    script(loader, monkeypatch, f"--data.root={synth_root}", "--data.num_workers", "0", "--data.batch_size", "2",
           "--data.augment.crop_size", "32", "--batches", "2", "--warmup", "1", "--json", str(out))  # fmt: skip
    result = json.loads(out.read_text())
    assert result["images_per_s"] > 0 and result["timed_batches"] == 2 and result["crop_size"] == 32
    assert result["epoch_start_wait_s"] > 0
    with pytest.raises(SystemExit):
        script(loader, monkeypatch, f"--data.root={synth_root}", "--batch", "2")  # not a loader setting
    assert "unrecognised argument '--batch'" in capsys.readouterr().err
