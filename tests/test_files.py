"""Atomic writes: a file appears whole or not at all, and the one it replaces can be kept."""

import os

import pytest

from cloudseg.errors import DataError
from cloudseg.files import atomic_path


def write(path, text, **options):
    with atomic_path(path, **options) as temporary:
        temporary.write_text(text)


def test_the_replaced_file_is_kept_as_previous_and_both_stay_whole(tmp_path):
    path, previous = tmp_path / "last.ckpt", tmp_path / "previous.ckpt"
    write(path, "epoch 0", previous=previous)
    assert path.read_text() == "epoch 0" and not previous.exists()
    write(path, "epoch 1", previous=previous)
    write(path, "epoch 2", previous=previous)
    assert path.read_text() == "epoch 2" and previous.read_text() == "epoch 1"
    assert os.stat(path).st_ino != os.stat(previous).st_ino  # two files, not two names of one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "previous.ckpt"]  # nothing left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "mask.png"
    write(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["mask.png"]


def test_a_path_through_a_file_names_the_folder_that_cannot_be_made(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError, match=r"a_file/sub: a part of this path is a file, not a folder"):
        write(tmp_path / "a_file" / "sub" / "x.png", "x")
