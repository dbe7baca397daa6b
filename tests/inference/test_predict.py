"""`cloudseg predict`, `export` and `demo` as a user runs them, including bad input."""

import json

import cv2
import numpy as np
import pytest
import torch

from cloudseg.cli.main import main
from cloudseg.config import PredictConfig
from cloudseg.data.dataset import stack_chw, to_chw
from cloudseg.data.io import SampleFiles, load_label
from cloudseg.errors import DataError
from cloudseg.inference.predict import predict
from cloudseg.inference.predictor import Predictor
from cloudseg.inference.sources import find_inputs
from cloudseg.models import build_model
from cloudseg.models.checkpoint import Release
from tests.conftest import B0


def test_predict_writes_masks_of_the_input_size_and_optional_maps(checkpoint, synth_root, tmp_path):
    output = tmp_path / "masks"
    code = main(["predict", "--checkpoint", str(checkpoint), "--input", str(synth_root), "--output", str(output),
                 "--submission", str(tmp_path / "sub.csv"), "--predict.tile", "48", "--predict.overlap", "16",
                 "--predict.index_masks", "true", "--predict.probabilities", "true",
                 "--predict.uncertainty", "entropy"])  # fmt: skip
    assert code == 0
    masks = sorted(output.glob("*.png"))
    assert [m.name for m in masks] == ["synth_0000.png", "synth_0001.png"]  # the test split
    ids = load_label(masks[0])  # only class colours
    assert ids.shape == (64, 64) and np.array_equal(cv2.imread(str(output / "index" / masks[0].name), 0), ids)
    probabilities = [cv2.imread(str(output / "probabilities" / f"synth_0000_{c}.png"), 0).astype(int) for c in
                     ("clear", "thick_cloud", "thin_cloud", "cloud_shadow")]  # fmt: skip
    assert np.abs(sum(probabilities) - 255).max() <= 3
    assert (output / "uncertainty" / "synth_0000.png").is_file()
    assert len((tmp_path / "sub.csv").read_text().splitlines()) == 3


def test_predict_reports_where_its_time_went(checkpoint, synth_root, tmp_path):
    result = predict(checkpoint, synth_root, tmp_path, PredictConfig(tile=48, overlap=16, tile_batch=2))
    assert result.masks == [tmp_path / "synth_0000.png", tmp_path / "synth_0001.png"]
    expected = {
        "loading the model",
        "checking earlier outputs",
        "waiting for images",
        "model, first batch",
        "model",
        "waiting for writes",
    }
    assert set(result.times) == expected
    assert all(seconds >= 0 for seconds in result.times.values()) and sum(result.times.values()) <= result.seconds
    assert result.summary().startswith(f"2 images in {result.seconds:.1f} s")


def test_channels_last_stacking_gives_the_batch_that_stacking_chw_views_gives():
    images = [np.random.default_rng(i).integers(0, 256, (5, 7, 3), dtype=np.uint8) for i in range(3)]
    batch = stack_chw(images)
    assert torch.equal(batch, torch.stack([to_chw(image) for image in images]))
    assert batch.is_contiguous(memory_format=torch.channels_last)


def test_predict_one_pair_of_odd_size(checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("rgb", "ngr"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "odd.png"), rng.integers(0, 255, (45, 71, 3), dtype=np.uint8))
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "rgb" / "odd.png"),
                 "--output", str(tmp_path / "out"), "--predict.tile", "32", "--predict.overlap", "8"]) == 0  # fmt: skip
    assert cv2.imread(str(tmp_path / "out" / "odd.png")).shape == (45, 71, 3)
    # the pair found from its RGB file is the pair found in its folder: the same bands in the same places
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path), "--output",
                 str(tmp_path / "folder"), "--predict.tile", "32", "--predict.overlap", "8"]) == 0  # fmt: skip
    assert (tmp_path / "out" / "odd.png").read_bytes() == (tmp_path / "folder" / "odd.png").read_bytes()
    assert find_inputs(tmp_path / "rgb" / "odd.png") == [
        SampleFiles("odd", tmp_path / "rgb" / "odd.png", tmp_path / "ngr" / "odd.png")
    ]
    (tmp_path / "ngr" / "odd.png").rename(tmp_path / "odd.png")
    with pytest.raises(DataError, match=r"rgb/odd.png: no NIR image of the same name in .*/ngr$"):
        find_inputs(tmp_path / "rgb" / "odd.png")
    with pytest.raises(DataError, match=r"odd.png: a single image must lie in an rgb/ folder with its pair in"):
        find_inputs(tmp_path / "odd.png")


def test_images_of_one_size_share_batches_unless_one_fills_a_batch_of_tiles_alone():
    from cloudseg.inference.engine import _same_size_runs

    # 64² fits the tile; 90 x 64 is 2 tiles (64² overlapping by 16), fewer than a batch of 3; 150 x 64 is 3 tiles
    sizes = [(64, 64)] * 5 + [(32, 48), (90, 64), (90, 64), (90, 64), (64, 64), (150, 64), (150, 64), (32, 48)]
    images = [(i, (np.zeros((*size, 3)), None)) for i, size in enumerate(sizes)]
    runs = [[i for i, _ in run] for run in _same_size_runs(images, batch_size=3, tile=64, overlap=16)]
    assert runs == [[0, 1, 2], [3, 4], [5], [6, 7, 8], [9], [10], [11], [12]]
    assert [[i for i, _ in run] for run in _same_size_runs(images[:5], batch_size=1, tile=64, overlap=16)] == [
        [0],
        [1],
        [2],
        [3],
        [4],
    ]


class Recording(torch.nn.Module):
    """Logits that are the inputs themselves; it keeps the shapes it is given, and compiles to itself."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def compile(self, **options) -> None:  # the shapes a compiled model would see, without compiling
        pass

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(rgb.shape))
        return torch.cat((rgb, aux), dim=1)


def test_a_compiled_model_sees_every_run_of_whole_images_padded_to_one_batch_shape():
    rgb, aux = (torch.randint(0, 256, (3, c, 40, 40), dtype=torch.uint8) for c in (3, 1))
    outputs = []
    for compile in (True, False):
        model = Recording()
        cfg = PredictConfig(tile=64, overlap=16, tile_batch=4, compile=compile)
        outputs.append(Predictor(model, Release.of(B0), torch.device("cpu"), cfg).logits(rgb, aux))
        assert model.shapes == [(4 if compile else 3, 3, 40, 40)]
    assert outputs[0].shape == (3, 4, 40, 40) and torch.equal(*outputs)  # the padding's logits are dropped


def write_pairs(folder, sizes, seed=0):
    rng = np.random.default_rng(seed)
    for name, (height, width) in sizes.items():
        for modality in ("rgb", "ngr"):
            (folder / modality).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            cv2.imwrite(str(folder / modality / f"{name}.png"), pixels)


def test_batched_prediction_with_io_processes_writes_what_one_image_at_a_time_writes(checkpoint, tmp_path):
    sizes = {"a": (48, 48), "b": (48, 48), "c": (48, 48), "d": (40, 70), "e": (48, 48), "f": (30, 20)}
    write_pairs(tmp_path / "in", sizes)
    outputs = {}
    for batch, workers in ((1, 0), (2, 3)):  # 0 resolves to a process per core
        output = tmp_path / f"out_{batch}"
        assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"), "--output",
                     str(output), "--submission", str(output / "sub.csv"), "--predict.tile", "48",
                     "--predict.overlap", "16", "--predict.tile_batch", str(batch), "--predict.io_workers",
                     str(workers), "--predict.uncertainty", "max_probability"]) == 0  # fmt: skip
        outputs[batch] = {name: load_label(output / f"{name}.png") for name in sizes}
        assert {name: ids.shape for name, ids in outputs[batch].items()} == sizes
        rows = (output / "sub.csv").read_text().splitlines()
        assert [row.split(",")[0] for row in rows[1:]] == [f"{name}.png" for name in sizes]
        assert len(list((output / "uncertainty").glob("*.png"))) == len(sizes)
    assert all(np.array_equal(outputs[1][name], outputs[2][name]) for name in sizes)


def test_reader_items_are_runs_of_one_size_and_an_unreadable_pair_is_its_error(tmp_path):
    from cloudseg.inference.engine import PairRuns
    from cloudseg.inference.sources import find_inputs

    write_pairs(tmp_path, {"a": (32, 32), "b": (32, 32), "c": (40, 70), "d": (32, 32), "e": (32, 32)})
    runs = PairRuns(find_inputs(tmp_path), batch_size=3, tile=48, overlap=16)
    assert len(runs) == 2
    first = runs[0]  # a, b, then c: another size
    assert [(names, tuple(rgb.shape), tuple(aux.shape)) for names, rgb, aux in first] == [
        (["a", "b"], (2, 3, 32, 32), (2, 1, 32, 32)),
        (["c"], (1, 3, 40, 70), (1, 1, 40, 70)),
    ]
    rgb = first[0][1]
    assert rgb.dtype == torch.uint8 and rgb.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(rgb[1], to_chw(cv2.imread(str(tmp_path / "rgb" / "b.png"))[..., ::-1]))  # RGB order
    (tmp_path / "rgb" / "e.png").write_bytes(b"not a png")
    assert "e.png" in runs[1]


def test_uncertainty_of_a_batch_is_the_uncertainty_of_each_image():
    from cloudseg.inference.engine import uncertainty_map

    probabilities = torch.rand(3, 4, 5, 6).softmax(1)
    for kind in ("entropy", "max_probability"):
        batch = uncertainty_map(probabilities, kind)
        assert batch.dtype == torch.uint8 and batch.shape == (3, 5, 6)
        assert torch.equal(batch, torch.stack([uncertainty_map(p, kind) for p in probabilities]))
    certain = torch.zeros(1, 4, 2, 2).index_fill(1, torch.tensor([2]), 1.0)
    even = torch.full((1, 4, 2, 2), 0.25)
    assert uncertainty_map(certain, "entropy").max() == 0 and uncertainty_map(even, "entropy").min() == 255
    assert uncertainty_map(even, "max_probability").unique().tolist() == [191]  # (1 - 0.25) * 255, rounded


def test_an_unreadable_image_among_others_is_an_error_naming_it(checkpoint, tmp_path, capsys, user_view):
    write_pairs(tmp_path, {f"n{i}": (32, 32) for i in range(6)})
    (tmp_path / "ngr" / "n3.png").write_bytes(b"not a png")
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path), "--output",
                 str(tmp_path / "out"), "--predict.tile_batch", "2"]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert "n3.png" in error and "\n" not in error.strip()


def test_bf16_precision_runs_the_model_in_bf16_on_a_cpu_within_its_rounding():
    torch.manual_seed(0)
    model = build_model("cmx_b0").eval()
    rgb, aux = (torch.randint(0, 256, (1, c, 64, 64), dtype=torch.uint8) for c in (3, 1))

    def logits(precision: str) -> torch.Tensor:
        cfg = PredictConfig(precision=precision)
        return Predictor(model, Release.of(B0), torch.device("cpu"), cfg).logits(rgb, aux)

    full = logits("32")
    assert torch.equal(logits("auto"), full)  # auto is fp32 on a CPU
    half = logits("bf16")
    error = ((half.float() - full).norm() / full.norm()).item()
    assert 1e-4 < error < 5e-2  # really bf16 (not fp32), but only by bf16's rounding


def test_bad_inputs_give_one_line_and_exit_code_2(checkpoint, synth_root, tmp_path, capsys, user_view):
    (tmp_path / "empty").mkdir()
    (tmp_path / "not_a_checkpoint.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "a_file").write_text("")
    cases = [
        (["--checkpoint", str(tmp_path / "not_a_checkpoint.safetensors"), "--input", str(synth_root)],
         "not_a_checkpoint.safetensors: cannot read it"),
        (["--checkpoint", str(checkpoint), "--input", str(tmp_path / "empty")], "no rgb/ and ngr/ folders"),
        (["--checkpoint", str(checkpoint), "--input", str(synth_root), "--output", str(tmp_path / "a_file" / "x")],
         "a part of this path is a file, not a folder"),
    ]  # fmt: skip
    for arguments, message in cases:
        if "--output" not in arguments:
            arguments += ["--output", str(tmp_path / "out")]
        assert main(["predict", *arguments]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("cloudseg: error: ") and message in error and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_onnx_export_matches_pytorch_on_two_sizes(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "model.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    from cloudseg.models.checkpoint import load_model

    model, _ = load_model(checkpoint)
    for batch, height, width in ((1, 64, 64), (2, 97, 130)):
        rgb, aux = torch.randn(batch, 3, height, width), torch.randn(batch, 1, height, width)
        (logits,) = session.run(None, {"rgb": rgb.numpy(), "aux": aux.numpy()})
        with torch.no_grad():
            reference = model(rgb, aux).numpy()
        assert logits.shape == reference.shape
        assert np.abs(logits - reference).max() < 1e-3


def test_a_submission_that_cannot_be_written_is_refused_before_any_image(checkpoint, synth_root, tmp_path, capsys,
                                                                         user_view):  # fmt: skip
    (tmp_path / "afile").write_text("")
    arguments = ["predict", "--checkpoint", str(checkpoint), "--input", str(synth_root), "--output",
                 str(tmp_path / "masks"), "--submission", str(tmp_path / "afile" / "s.csv")]  # fmt: skip
    assert main(arguments) == 2
    assert capsys.readouterr().err == f"cloudseg: error: {tmp_path / 'afile'}: a file is in the way of this folder\n"
    assert not (tmp_path / "masks").exists()


def test_export_without_the_onnx_package_says_how_to_install_it(checkpoint, tmp_path, monkeypatch, capsys, user_view):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else find_spec(name, *a))
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "model.onnx")]) == 2
    assert (
        capsys.readouterr().err == "cloudseg: error: ONNX export needs the onnx package: pip install 'cloudseg[onnx]'\n"
    )
    assert not list(tmp_path.iterdir())


def test_the_onnx_runtime_predicts_what_torch_predicts_and_int8_nearly_so(checkpoint, synth_root, tmp_path):
    """`predict.runtime onnx` gives PyTorch's logits to float rounding, tiles and test-time flips included;
    `onnx_int8` (weights of the matrix products in int8) moves logits a little and keeps almost every class."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    rgb, aux = (torch.randint(0, 256, (2, c, 70, 90), dtype=torch.uint8) for c in (3, 1))
    logits = {
        runtime: Predictor.from_checkpoint(checkpoint, "cpu", tile=48, overlap=16, tta="flips", runtime=runtime).logits(
            rgb, aux
        )
        for runtime in ("torch", "onnx", "onnx_int8")
    }
    assert (logits["onnx"] - logits["torch"]).abs().max() < 1e-3
    int8_error = (logits["onnx_int8"] - logits["torch"]).abs().max()
    assert 0 < int8_error < 0.1 * logits["torch"].abs().max()  # quantised, and still close
    assert (logits["onnx_int8"].argmax(1) == logits["torch"].argmax(1)).float().mean() > 0.99
    # the command writes what torch writes
    for runtime in ("torch", "onnx"):
        assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(synth_root), "--output",
                     str(tmp_path / runtime), "--predict.runtime", runtime, "--device", "cpu"]) == 0  # fmt: skip
    assert files_equal(tmp_path / "torch", tmp_path / "onnx", "*.png")


def files_equal(one, two, pattern: str) -> bool:
    names = sorted(p.name for p in one.glob(pattern))
    return (
        bool(names)
        and names == sorted(p.name for p in two.glob(pattern))
        and all((one / name).read_bytes() == (two / name).read_bytes() for name in names)
    )


def test_the_onnx_runtime_refuses_settings_it_cannot_run():
    from cloudseg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"predict\.runtime onnx runs the float32 graph in onnxruntime; drop "
                                          r"predict\.precision bf16"):  # fmt: skip
        PredictConfig(runtime="onnx", precision="bf16").check()
    with pytest.raises(ConfigError, match=r"drop predict\.compile true"):
        PredictConfig(runtime="onnx_int8", compile=True).check()


def test_fast_demo_runs_the_whole_path_and_learns(tmp_path, capsys):
    import os

    from cloudseg.inference.rle import read_submission, rle_decode, score_submission
    from cloudseg.training.run import RUN_DIR_VARIABLE

    (tmp_path / "demo" / "masks").mkdir(parents=True)
    (tmp_path / "demo" / "masks" / "synth_0015.png").write_bytes(b"a mask of an earlier demo's scene")
    assert main(["demo", "--fast", "--output", str(tmp_path / "demo")]) == 0
    demo = tmp_path / "demo"
    out = capsys.readouterr().out
    for item in ("submission.csv", "evaluation/metrics.json", "evaluation/confusion.png", "masks/synth_0000.png"):
        assert (demo / item).is_file(), item
    rows = read_submission(demo / "submission.csv")
    masks = sorted((demo / "masks").glob("*.png"))
    assert [m.name for m in masks] == sorted(rows) and len(masks) == 4
    for mask in masks:  # each row is its mask
        colour = cv2.imread(str(mask))
        assert np.array_equal(rle_decode(rows[mask.name], *colour.shape[:2]), colour)
    scores = score_submission(demo / "submission.csv", demo / "data" / "test_labels")
    assert f"test mean IoU {scores['mIoU']:.3f}" in out
    assert json.loads((demo / "score.json").read_text()) == scores  # kept for benchmarks/wall_time.py --collect
    # A floor: better than calling every pixel clear, which three epochs of training must beat.
    for mask in masks:
        cv2.imwrite(str(mask), np.zeros_like(cv2.imread(str(mask))))
    main(["submit", str(demo / "masks"), "-o", str(tmp_path / "clear.csv")])
    assert scores["mIoU"] > score_submission(tmp_path / "clear.csv", demo / "data" / "test_labels")["mIoU"] + 0.03
    assert RUN_DIR_VARIABLE not in os.environ  # the demo's run folder is not left for a later run to reuse


def test_an_interrupted_command_says_so_in_one_line(checkpoint, synth_root, tmp_path, capsys, monkeypatch, user_view):
    import cloudseg.inference.predict

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cloudseg.inference.predict, "predict", interrupted)
    arguments = ["predict", "--checkpoint", str(checkpoint), "--input", str(synth_root), "--output", str(tmp_path)]
    assert main(arguments) == 130
    assert capsys.readouterr().err == "cloudseg: interrupted by SIGINT; every file written so far is complete\n"
    assert main(["--debug", *arguments]) == 130  # the same line and exit code, after the traceback
    error = capsys.readouterr().err
    assert "Traceback" in error and error.endswith(
        "cloudseg: interrupted by SIGINT; every file written so far is complete\n"
    )


def test_whole_image_outputs_equal_an_independent_forward_pass(checkpoint, synth_root, tmp_path):
    """Masks, index maps, probabilities, uncertainty and submission rows against the model run here by hand."""
    from cloudseg.inference.rle import read_submission, rle_decode
    from cloudseg.models.checkpoint import load_model
    from tests.inference.reference import NAMES, colours, inputs

    output = tmp_path / "masks"
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(synth_root), "--output", str(output),
                 "--submission", str(tmp_path / "sub.csv"), "--predict.index_masks", "true",
                 "--predict.probabilities", "true", "--predict.uncertainty", "entropy"]) == 0  # fmt: skip
    model, _ = load_model(checkpoint)
    rows = read_submission(tmp_path / "sub.csv")
    assert list(rows) == ["synth_0000.png", "synth_0001.png"]
    for name in ("synth_0000", "synth_0001"):
        with torch.no_grad():
            logits = model(*inputs(synth_root / "test", name))[0]
        ids = logits.argmax(0).numpy()
        probabilities = logits.softmax(0).numpy()
        entropy = -(probabilities * np.log(probabilities)).sum(0) / np.log(4)
        assert np.array_equal(cv2.imread(str(output / f"{name}.png")), colours(ids))
        assert np.array_equal(cv2.imread(str(output / "index" / f"{name}.png"), cv2.IMREAD_UNCHANGED), ids)
        for class_id, class_name in enumerate(NAMES):
            written = cv2.imread(str(output / "probabilities" / f"{name}_{class_name}.png"), cv2.IMREAD_UNCHANGED)
            assert np.abs(written.astype(int) - np.round(255 * probabilities[class_id])).max() <= 1
        uncertainty = cv2.imread(str(output / "uncertainty" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert np.abs(uncertainty.astype(int) - np.round(255 * entropy)).max() <= 1
        assert np.array_equal(rle_decode(rows[f"{name}.png"], 64, 64), colours(ids))  # the row is the mask


def test_the_predictor_gives_probabilities_and_class_ids_for_one_image_or_a_batch(checkpoint, synth_root):
    import cloudseg
    from tests.inference.reference import inputs

    predictor = cloudseg.Predictor.from_checkpoint(checkpoint, "cpu", tile=48, overlap=16)  # 64²: in tiles
    rgb, nir = (to_chw(image) for image in read_sample_pair(synth_root, "synth_0000"))
    probabilities = predictor(rgb, nir)
    assert probabilities.shape == (4, 64, 64) and probabilities.dtype == torch.float32
    torch.testing.assert_close(probabilities.sum(0), torch.ones(64, 64))
    assert torch.equal(predictor.class_ids(rgb, nir), probabilities.argmax(0))
    batch = predictor(torch.stack([rgb, rgb]), torch.stack([nir, nir]))
    assert batch.shape == (2, 4, 64, 64) and torch.equal(batch[1], probabilities)
    whole = cloudseg.Predictor.from_checkpoint(checkpoint, "cpu")  # 64² fits the default 512 tile
    model, _ = cloudseg.load_model(checkpoint)
    with torch.no_grad():
        expected = model(*inputs(synth_root / "test", "synth_0000"))[0].softmax(0)
    torch.testing.assert_close(whole(rgb, nir), expected, rtol=1e-5, atol=1e-6)


def read_sample_pair(root, name):
    from cloudseg.data.io import SampleFiles, read_sample

    files = SampleFiles(name, root / "test" / "rgb" / f"{name}.png", root / "test" / "ngr" / f"{name}.png")
    return read_sample(files)[:2]


def test_the_predictor_names_inputs_that_are_not_uint8_tensors_of_one_size():
    predictor = Predictor(Recording(), Release.of(B0), torch.device("cpu"), PredictConfig())
    rgb, aux = torch.zeros(3, 40, 40, dtype=torch.uint8), torch.zeros(1, 40, 40, dtype=torch.uint8)
    wrong = {
        "rgb must be a torch.uint8 tensor .* got ndarray uint8 \\(40, 40, 3\\)": (rgb.permute(1, 2, 0).numpy(), aux),
        "rgb must be a torch.uint8 tensor .* got Tensor torch.float32 \\(3, 40, 40\\)": (rgb / 255, aux),
        "aux must be a torch.uint8 tensor \\(1, H, W\\)": (rgb, aux.expand(3, -1, -1)),
        "rgb \\(3, 40, 40\\) and aux \\(1, 40, 41\\) differ": (rgb, torch.zeros(1, 40, 41, dtype=torch.uint8)),
    }
    for message, (rgb_in, aux_in) in wrong.items():
        with pytest.raises((TypeError, ValueError), match=message):
            predictor.logits(rgb_in, aux_in)
    assert predictor.logits(rgb, aux).shape == (4, 40, 40)


def test_a_batch_larger_than_the_tile_batch_runs_in_parts_of_it():
    rgb, aux = (torch.randint(0, 256, (5, c, 40, 40), dtype=torch.uint8) for c in (3, 1))
    model = Recording()
    cfg = PredictConfig(tile=64, overlap=16, tile_batch=2, compile=True)  # a compiled model: one batch shape
    logits = Predictor(model, Release.of(B0), torch.device("cpu"), cfg).logits(rgb, aux)
    assert model.shapes == [(2, 3, 40, 40)] * 3 and logits.shape == (5, 4, 40, 40)
