"""`predict`'s writer processes: what they write, in what order, and their errors."""

import hashlib
import multiprocessing
import signal
import subprocess
import sys

import numpy as np
import pytest

from cloudseg.config import PredictConfig
from cloudseg.data.io import colour_to_index, load_label
from cloudseg.errors import CloudsegError
from cloudseg.inference import outputs
from cloudseg.inference.outputs import ImageOutputs, OutputWriters, write_batch
from cloudseg.inference.rle import rle_decode


def random_outputs(count: int, maps: bool = False) -> ImageOutputs:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, (count, 9, 13), dtype=np.uint8)
    planes = rng.integers(0, 256, (count, 4, 9, 13), dtype=np.uint8) if maps else None
    uncertainty = rng.integers(0, 256, (count, 9, 13), dtype=np.uint8) if maps else None
    return ImageOutputs([f"img{i}" for i in range(count)], ids, planes, uncertainty)


def test_parts_are_consecutive_and_cover_the_batch_once():
    batch = random_outputs(7, maps=True)
    parts = list(batch.chunks(3))
    assert [len(part) for part in parts] == [3, 3, 1]
    assert [name for part in parts for name in part.names] == batch.names
    for field in ("ids", "probabilities", "uncertainty"):
        assert np.array_equal(np.concatenate([getattr(part, field) for part in parts]), getattr(batch, field))
    assert [len(part) for part in random_outputs(2).chunks(8)] == [1, 1]


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])  # Linux's, and macOS's and Windows'
def test_writer_processes_write_each_image_and_return_what_they_wrote_in_order(tmp_path, monkeypatch, start_method):
    monkeypatch.setattr(outputs, "_context", lambda: multiprocessing.get_context(start_method))
    cfg = PredictConfig(index_masks=True, probabilities=True, uncertainty="entropy")
    batches = [random_outputs(5, maps=True), random_outputs(3, maps=True)]
    batches[1].names = [f"late{i}" for i in range(3)]
    written = []
    with OutputWriters(tmp_path, cfg, workers=3, pending=2) as writers:  # `pending` below a batch: submit waits
        for batch in batches:
            written += writers.submit(batch)
        for finished in writers.remaining():
            written += finished
    rows, entries = [row for row, _ in written], [entry for _, entry in written]
    names = batches[0].names + batches[1].names
    assert [name for name, _ in rows] == [f"{name}.png" for name in names]
    ids = np.concatenate([batch.ids for batch in batches])
    for (name, encoded), expected in zip(rows, ids, strict=True):
        stem = name.removesuffix(".png")
        assert np.array_equal(load_label(tmp_path / name), expected)
        assert np.array_equal(load_label(tmp_path / "index" / name), expected)
        assert np.array_equal(colour_to_index(rle_decode(encoded, 9, 13), name), expected)  # the row
        assert (tmp_path / "probabilities" / f"{stem}_cloud_shadow.png").is_file()
        assert (tmp_path / "uncertainty" / name).is_file()
    for entry, expected in zip(entries, ids, strict=True):  # each manifest entry: size, shares, every file's hash
        assert (entry["height"], entry["width"]) == expected.shape and entry["mpx"] == round(expected.size / 1e6, 6)
        counts = np.bincount(expected.ravel(), minlength=4)
        assert list(entry["shares"].values()) == pytest.approx(counts / expected.size, abs=1e-6)
        assert len(entry["outputs"]) == 1 + 1 + 4 + 1  # colour, index, 4 probabilities, uncertainty
        for file, digest in entry["outputs"].items():
            assert hashlib.sha256((tmp_path / file).read_bytes()).hexdigest() == digest
    assert written[:5] == write_batch(batches[0], tmp_path / "again", cfg)  # the same as written in-process


def test_a_write_that_fails_in_a_worker_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "index").write_text("a file where the index/ folder should be")
    writers = OutputWriters(tmp_path, PredictConfig(index_masks=True), workers=2, pending=8)
    with pytest.raises(CloudsegError, match=r"/index: a file is in the way of this folder"), writers:
        writers.submit(random_outputs(2))
        list(writers.remaining())


def test_the_writers_module_imports_no_torch():
    # Each writer process imports it: without torch it starts in a fraction of a second.
    code = "import sys, cloudseg.inference.outputs; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_writer_processes_leave_ctrl_c_to_the_parent(tmp_path):
    # Ctrl-C reaches the whole process group: the workers ignore it and finish writing the part in hand.
    with OutputWriters(tmp_path, PredictConfig(), workers=1, pending=1) as writers:
        assert writers.pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN
