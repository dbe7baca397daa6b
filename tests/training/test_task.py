"""The training task: optimiser groups and schedule, overfitting a few images, non-finite losses, checkpoints."""

import math
import types

import lightning as L
import numpy as np
import pytest
import torch

from cloudseg.config import Config, LossConfig, OptimConfig
from cloudseg.data.dataset import normalise, to_chw
from cloudseg.data.synth import make_scene
from cloudseg.errors import ConfigError, WeightsError
from cloudseg.models import MIT_VARIANTS, build_from_spec
from cloudseg.models.checkpoint import load_model, save_release
from cloudseg.schema import AUX_NORM, RGB_NORM, encode_reflectance
from cloudseg.sections import from_dict, to_dict
from cloudseg.training.losses import SegmentationLoss
from cloudseg.training.task import SegmentationTask, build_scheduler, parameter_groups
from tests.conftest import B0, TINY_SPEC


def test_groups_split_encoders_from_the_head_and_exempt_one_dimensional_parameters():
    model = build_from_spec("cmx", TINY_SPEC)
    groups = {
        g["name"]: g for g in parameter_groups(model, OptimConfig(lr_encoder=1e-4, lr_head=1e-3, weight_decay=0.05))
    }
    assert set(groups) == {"encoder", "encoder_no_decay", "head", "head_no_decay"}
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))
    encoder = {id(p) for p in [*model.rgb.parameters(), *model.aux.parameters()]}
    assert all(id(p) in encoder for p in groups["encoder"]["params"] + groups["encoder_no_decay"]["params"])
    assert groups["encoder"]["lr"] == 1e-4 and groups["head"]["lr"] == 1e-3
    assert all(p.ndim == 1 for g in ("encoder_no_decay", "head_no_decay") for p in groups[g]["params"])
    assert groups["head_no_decay"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == 0.05


def test_learning_rates_follow_warmup_then_cosine_to_the_minimum():
    model = build_from_spec("segformer", TINY_SPEC)
    cfg = OptimConfig(lr_encoder=1e-4, lr_head=1e-3, schedule="cosine", warmup_epochs=1, min_lr=1e-6)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg))
    scheduler = build_scheduler(optimizer, cfg, total_steps=110, steps_per_epoch=10)
    seen = {}
    for step in range(110):
        seen[step] = [g["lr"] for g in optimizer.param_groups]
        optimizer.step()
        scheduler.step()
    base = [g["initial_lr"] for g in optimizer.param_groups]

    def expected(step, lr):
        if step < 10:
            return lr * (step + 1) / 10
        progress = (step - 10) / 100
        return 1e-6 + (lr - 1e-6) * 0.5 * (1 + math.cos(math.pi * progress))

    for step in (0, 4, 9, 10, 35, 60, 85, 109):
        assert seen[step] == pytest.approx([expected(step, lr) for lr in base], rel=1e-9), step
    assert seen[60] == pytest.approx([(lr + 1e-6) / 2 for lr in base])  # halfway down the cosine


def test_tiny_cmx_overfits_a_few_synthetic_images():
    # 256² scenes: logits come out at 1/4 resolution, and on these fractal cloud edges even a perfect 1/4-scale
    # map upsampled can reach only ~0.95 accuracy at 128² but ~0.98 at 256².
    torch.manual_seed(0)
    scenes = [make_scene(np.random.default_rng(i), 256) for i in range(2)]
    rgb = normalise(torch.stack([to_chw(encode_reflectance(image[..., :3])) for image, _ in scenes]), RGB_NORM)
    aux = normalise(torch.stack([to_chw(encode_reflectance(image[..., 3:])) for image, _ in scenes]), AUX_NORM)
    mask = torch.stack([torch.from_numpy(ids).long() for _, ids in scenes])
    model = build_from_spec("cmx", TINY_SPEC, decoder_dim=64, drop_path_rate=0.0)
    loss_fn = SegmentationLoss(LossConfig(ce=1.0, ohem=0.0, dice=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        loss, _ = loss_fn(model(rgb, aux), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        accuracy = (model.eval()(rgb, aux).argmax(1) == mask).float().mean().item()
    assert losses[-1] < 0.1 * losses[0] and accuracy > 0.95


def test_release_checkpoint_rebuilds_the_model_alone(tmp_path):
    cfg = B0
    model = build_from_spec("cmx", MIT_VARIANTS["b0"]).eval()
    path = save_release(model, to_dict(cfg), tmp_path / "best.safetensors", {"epoch": 3, "metrics": {"mIoU": 0.5}})
    loaded, release = load_model(path)
    rgb, aux = torch.randn(1, 3, 64, 64), torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(rgb, aux), model(rgb, aux))
    assert release.info["epoch"] == 3 and release.classes[3].name == "cloud_shadow" and release.config == cfg
    assert release.rgb_norm == RGB_NORM and release.aux_norm == AUX_NORM  # what inference normalises with
    assert (tmp_path / "best.json").is_file()


def test_other_files_are_refused_as_checkpoints(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match=r"other\.safetensors: not a cloudseg checkpoint"):
        load_model(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(WeightsError, match=r"junk\.safetensors: cannot read it"):
        load_model(tmp_path / "junk.safetensors")


def test_init_from_refuses_a_checkpoint_of_another_variant_or_class_count(tmp_path):
    model = build_from_spec("cmx", MIT_VARIANTS["b0"])
    path = save_release(model, to_dict(B0), tmp_path / "b0.safetensors")
    task = SegmentationTask(to_dict(from_dict(Config, {"model": {"name": "cmx_b0", "init_from": str(path)}})))
    assert all(
        torch.equal(a, b) for a, b in zip(task.model.state_dict().values(), model.state_dict().values(), strict=True)
    )
    with pytest.raises(
        WeightsError, match=r"trained as cmx_b0 with 4 classes .* this run builds cmx_b0 with 3 classes"
    ):
        SegmentationTask(
            to_dict(from_dict(Config, {"model": {"name": "cmx_b0", "init_from": str(path), "num_classes": 3}}))
        )


def test_a_resumed_task_does_not_need_its_start_weights(tmp_path):
    config = to_dict(
        from_dict(Config, {"model": {"name": "cmx_b0", "pretrained": str(tmp_path / "gone" / "mit_b0.pth")}})
    )
    with pytest.raises(WeightsError, match="no such file or folder"):
        SegmentationTask(config)
    assert SegmentationTask(config, start_weights=False).hparams["config"] == config


def test_compiling_keeps_the_checkpoint_keys_and_stores_each_weight_once():
    plain = SegmentationTask(to_dict(B0))
    config = to_dict(B0)
    config["trainer"]["compile"] = True
    compiled = SegmentationTask(config)  # compiles lazily, at the first call
    keys = list(compiled.state_dict())
    assert keys == list(plain.state_dict()) and all(k.startswith("model.") for k in keys)
    # a checkpoint of cloudseg 0.1.0 also held every weight under `network.`; loading drops that copy
    old = {"state_dict": {**{f"network.{k[6:]}": 0 for k in keys}, **dict.fromkeys(keys, 0)}}
    compiled.on_load_checkpoint(old)
    assert list(old["state_dict"]) == keys


@pytest.mark.parametrize(("mode", "loss_mode"), [("reduce-overhead", "default"), ("default", "default")])
def test_cuda_graphs_are_recorded_for_the_model_alone(monkeypatch, mode, loss_mode):
    modes = {}
    monkeypatch.setattr(torch.nn.Module, "compile", lambda module, **kw: modes.setdefault(type(module), kw["mode"]))
    config = to_dict(B0)
    config["trainer"] |= {"compile": True, "compile_mode": mode, "accumulate_grad_batches": 1}
    task = SegmentationTask(config)
    assert modes == {type(task.model): mode, SegmentationLoss: loss_mode}


def test_cuda_graphs_with_accumulated_gradients_are_refused_before_training():
    config = to_dict(B0)
    config["trainer"] |= {"compile": True, "compile_mode": "max-autotune", "accumulate_grad_batches": 4}
    with pytest.raises(ConfigError, match=r"'max-autotune' records CUDA graphs.*'max-autotune-no-cudagraphs'"):
        SegmentationTask(config)
    config["trainer"]["compile_mode"] = "max-autotune-no-cudagraphs"
    SegmentationTask(config)


class _GradientNorms(L.Callback):
    """Records the gradients' global norm that each optimiser step used (Lightning runs the forward, backward and
    clipping inside `optimizer.step`, so its post-hook sees them)."""

    def on_train_start(self, trainer: L.Trainer, task) -> None:
        self.norms = []
        trainer.optimizers[0].register_step_post_hook(lambda *_: self.norms.append(gradient_norm(task)))


def gradient_norm(module: torch.nn.Module) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters()])).item()


def test_gradients_are_clipped_under_mixed_precision_with_the_fused_optimiser():
    # Lightning's mixed-precision plugin refuses to clip for a fused AdamW; this stopped the first GPU run.
    task = SegmentationTask(to_dict(from_dict(Config, {"model": {"name": "cmx_b0"}, "optim": {"grad_clip": 1e-3}})))
    sample = {"rgb": torch.randn(3, 64, 64), "aux": torch.randn(1, 64, 64), "mask": torch.randint(0, 4, (64, 64))}
    norms = _GradientNorms()
    trainer = L.Trainer(
        accelerator="cpu", precision="bf16-mixed", gradient_clip_val=1e-3, max_steps=2, callbacks=[norms],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader([sample] * 4, batch_size=2))
    assert trainer.optimizers[0].defaults["fused"]
    assert len(norms.norms) == 2 and all(0 < n <= 1e-3 * 1.001 for n in norms.norms), norms.norms


def test_fp16_gradients_are_unscaled_before_they_are_clipped():
    # fp16 AMP runs on GPUs only, so its scaler is given here: clipping must measure the true gradients.
    task = SegmentationTask(to_dict(B0))
    optimizer = torch.optim.AdamW(task.parameters(), fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.zeros(()))  # as the scaled loss does: the scale is made at its first use
    task._trainer = types.SimpleNamespace(precision_plugin=types.SimpleNamespace(scaler=scaler))
    torch.manual_seed(0)
    true_gradients = [torch.randn_like(p) for p in task.parameters()]
    for parameter, gradient in zip(task.parameters(), true_gradients, strict=True):
        parameter.grad = gradient * 1024.0
    true_norm = gradient_norm(task) / 1024.0
    task.configure_gradient_clipping(optimizer, gradient_clip_val=1.0)
    assert gradient_norm(task) == pytest.approx(1.0, rel=1e-4)
    scale = 1.0 / true_norm
    assert all(
        torch.allclose(p.grad, g * scale, rtol=1e-4, atol=1e-7)
        for p, g in zip(task.parameters(), true_gradients, strict=True)
    )


class _CudnnBenchmarkSeen(L.Callback):
    """Records torch.backends.cudnn.benchmark as each training and validation batch runs."""

    def __init__(self):
        self.seen = {"train": set(), "val": set()}

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_index: int) -> None:
        self.seen["train"].add(torch.backends.cudnn.benchmark)

    def on_validation_batch_end(self, trainer, task, outputs, batch, batch_index: int, dataloader_idx=0) -> None:
        self.seen["val"].add(torch.backends.cudnn.benchmark)


@pytest.mark.parametrize("deterministic", [False, True])
def test_cudnn_times_its_algorithms_for_the_training_crops_only(deterministic):
    # The crops have one shape, so timing cuDNN's algorithms once pays; whole validation images may come in many
    # sizes, each of which would be timed anew. A deterministic run never picks algorithms by their speed.
    config = from_dict(Config, {"model": {"name": "cmx_b0"}, "trainer": {"deterministic": deterministic, "panels": 0}})
    task = SegmentationTask(to_dict(config))
    sample = {"rgb": torch.randn(3, 64, 64), "aux": torch.randn(1, 64, 64), "mask": torch.randint(0, 4, (64, 64))}
    loader = torch.utils.data.DataLoader([sample] * 4, batch_size=2)
    seen = _CudnnBenchmarkSeen()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, callbacks=[seen], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    try:
        trainer.fit(task, train_dataloaders=loader, val_dataloaders=loader)
    finally:
        torch.backends.cudnn.benchmark = False
    assert seen.seen == {"train": {not deterministic}, "val": {False}}
