"""Peak-memory estimates: the live-storage count on known answers, how estimates scale, and what they refuse."""

import pytest
import torch

from cloudseg.cli.main import main
from cloudseg.config import ModelConfig
from cloudseg.errors import ResourceError
from cloudseg.memory import LiveStorage, MemoryCheck, inference_bytes, model_bytes, training_bytes
from cloudseg.models import build_model


def test_the_count_follows_each_storage_from_creation_to_release():
    with torch.device("meta"), LiveStorage() as counter:
        a = torch.zeros(100)  # 400 bytes
        b = torch.zeros(200)  # 800 bytes: 1200 live
        view = a[10:]  # a view shares a's storage: nothing new
        del a
        assert counter.live == 1200  # the view keeps the storage alive
        del view
        c = torch.zeros(50)  # 200 bytes after 400 were freed: 1000 live
        assert counter.live == 1000
        del b, c
    assert counter.peak == 1200 and counter.live == 0


def test_training_keeps_its_activations_and_inference_frees_them():
    model = ModelConfig(name="cmx_b0")
    parameters, training = model_bytes(model, 64, 2, True)
    _, inference = model_bytes(model, 64, 2, False)
    assert parameters == 4 * sum(p.numel() for p in build_model("cmx_b0").parameters())  # fp32
    assert inference < training / 2


def test_estimates_grow_with_the_batch_and_the_pixels():
    model = ModelConfig(name="cmx_b0")
    by_batch = [model_bytes(model, 64, batch, True)[1] for batch in (1, 2, 4)]
    assert by_batch[0] < by_batch[1] < by_batch[2]
    small, large = (model_bytes(model, side, 1, True)[1] for side in (128, 256))
    assert large > 3 * small  # 4 times the pixels, beside a part of fixed size (the decoder's folded weights)
    assert training_bytes(model, 64, 2, "bf16-mixed") < training_bytes(model, 64, 2, "32")
    assert inference_bytes([model, model], 64, 2, False) > inference_bytes([model], 64, 2, False)


def test_a_check_refuses_warns_or_stays_quiet_as_asked(monkeypatch, caplog):
    import cloudseg.memory

    monkeypatch.setattr(cloudseg.memory, "available_bytes", lambda device: 2**30)
    check = MemoryCheck("training x", 3 * 2**30, torch.device("cpu"), "data.batch_size", "trainer.memory_check")
    with pytest.raises(ResourceError, match=r"training x needs about 3\.0 GiB; 1\.0 GiB of main memory is free: "
                       r"lower data\.batch_size, or set --trainer\.memory_check warn to try anyway"):  # fmt: skip
        check.apply("refuse")
    check.apply("warn")
    assert "it may run out of memory" in caplog.text
    check.apply("off")


def test_settings_that_cannot_fit_are_refused_before_anything_runs(synth_root, tmp_path, capsys, user_view):
    # 64 crops of 2048² need far more memory than any machine has: refused in one line, no run folder made
    arguments = ["train", "--data.root", str(synth_root), "--data.augment.crop_size", "2048",
                 "--data.augment.upscale", "true", "--data.batch_size", "64",
                 "--run.output_dir", str(tmp_path)]  # fmt: skip
    assert main(arguments) == 3
    error = capsys.readouterr().err
    assert error.startswith("cloudseg: error: training cmx_b0 on batches of 64 crops of 2048² (32-true) needs about")
    assert "lower data.batch_size or data.augment.crop_size" in error and not any(tmp_path.iterdir())
