"""Reading images and labels: the colour table round trip and every documented conversion or refusal."""

import cv2
import numpy as np
import pytest

from cloudseg.data.io import colour_to_index, index_to_colour, load_label, load_nir, load_rgb, write_image
from cloudseg.errors import DataError
from cloudseg.files import atomic_path
from cloudseg.schema import CLASSES, IGNORE_INDEX


def test_colour_index_round_trip_over_all_classes():
    ids = np.random.default_rng(0).integers(0, len(CLASSES), (37, 41)).astype(np.uint8)
    colours = index_to_colour(ids)
    assert [tuple(colours[ids == c.id][0]) for c in CLASSES] == [c.bgr for c in CLASSES]
    assert np.array_equal(colour_to_index(colours, "x.png"), ids)


def test_colours_of_any_integer_ids_and_views_are_the_class_table_s():
    ids = np.random.default_rng(2).integers(0, len(CLASSES), (20, 31), dtype=np.int64)
    table = np.array([c.bgr for c in CLASSES], dtype=np.uint8)
    for view in (ids, ids[:, ::2], ids.T, ids[:0]):
        colours = index_to_colour(view)
        assert colours.shape == (*view.shape, 3) and colours.dtype == np.uint8
        assert np.array_equal(colours, table[view])
    with pytest.raises(ValueError, match="class ids must be below 4, got 4"):
        index_to_colour(np.full((2, 2), 4, np.uint8))


def test_label_file_round_trip(tmp_path):
    ids = np.random.default_rng(1).integers(0, len(CLASSES), (20, 30)).astype(np.uint8)
    write_image(tmp_path / "label.png", index_to_colour(ids))
    assert np.array_equal(load_label(tmp_path / "label.png"), ids)


def test_unknown_colour_is_an_error_naming_file_colour_and_count(tmp_path):
    label = index_to_colour(np.zeros((10, 10), np.uint8))
    label[:3, :4] = (255, 0, 255)
    write_image(tmp_path / "scene_07.png", label)
    with pytest.raises(DataError) as error:
        load_label(tmp_path / "scene_07.png")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'scene_07.png'}: 12 pixels have colours outside the class table")
    assert "12 px of (255, 0, 255)" in message and "thick_cloud (0, 0, 255)" in message
    ids = load_label(tmp_path / "scene_07.png", unknown_colours="ignore")
    assert (ids == IGNORE_INDEX).sum() == 12 and (ids == 0).sum() == 88


def test_rgb_is_returned_in_rgb_order_and_nir_is_channel_two_of_ngr(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30
    write_image(tmp_path / "a.png", bgr)
    assert load_rgb(tmp_path / "a.png")[0, 0].tolist() == [30, 20, 10]
    nir = load_nir(tmp_path / "a.png")
    assert nir.shape == (4, 5, 1) and (nir == 30).all()


def test_sixteen_bit_image_is_scaled_and_noted(tmp_path):
    image = np.full((4, 4, 3), 65535, np.uint16)
    image[0, 0] = (257 * 10, 257 * 20, 257 * 30)
    cv2.imwrite(str(tmp_path / "deep.png"), image)
    notes = []
    rgb = load_rgb(tmp_path / "deep.png", notes)
    assert rgb.dtype == np.uint8 and rgb[0, 0].tolist() == [30, 20, 10] and rgb[1, 1].tolist() == [255] * 3
    assert notes == [f"{tmp_path / 'deep.png'}: 16-bit image, scaled to 8 bits (value / 257)"]
    with pytest.raises(DataError, match="uint16 label"):
        load_label(tmp_path / "deep.png")


def test_single_channel_files_follow_their_rules(tmp_path):
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) % 4
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    with pytest.raises(DataError, match="1-channel uint8 image; expected a 3-channel colour image"):
        load_rgb(tmp_path / "grey.png")
    notes = []
    assert np.array_equal(load_nir(tmp_path / "grey.png", notes)[..., 0], grey)
    assert np.array_equal(load_label(tmp_path / "grey.png", notes=notes), grey)
    assert len(notes) == 2
    cv2.imwrite(str(tmp_path / "ids.png"), grey + 3)
    with pytest.raises(DataError, match=r"pixels have ids 4, 5, 6; expected 0\.\.3"):
        load_label(tmp_path / "ids.png")


def test_alpha_channel_is_dropped(tmp_path):
    cv2.imwrite(str(tmp_path / "alpha.png"), np.full((3, 3, 4), (1, 2, 3, 255), np.uint8))
    assert load_rgb(tmp_path / "alpha.png")[0, 0].tolist() == [3, 2, 1]


def test_truncated_and_unreadable_files_are_errors(tmp_path):
    write_image(tmp_path / "whole.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) - 20])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"cut\.png: (the file is truncated|not a readable image)"):
        load_rgb(tmp_path / "cut.png")
    with pytest.raises(DataError, match=r"junk\.png: not a readable image"):
        load_rgb(tmp_path / "junk.png")
    with pytest.raises(DataError, match=r"missing\.png: cannot read the file"):
        load_rgb(tmp_path / "missing.png")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_write_gives_new_files_the_usual_permissions_and_keeps_existing_ones(tmp_path):
    with atomic_path(tmp_path / "new.txt") as temporary:
        temporary.write_text("x")
    (tmp_path / "plain.txt").write_text("x")  # what open() gives under this process's umask
    existing = tmp_path / "existing.txt"
    existing.write_text("old")
    existing.chmod(0o640)
    with atomic_path(existing) as temporary:
        temporary.write_text("new")
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert existing.stat().st_mode & 0o777 == 0o640 and existing.read_text() == "new"


def test_a_release_checkpoint_gets_the_usual_permissions(tmp_path):
    from torch import nn

    from cloudseg.models.checkpoint import save_release

    path = save_release(nn.Linear(2, 2), {}, tmp_path / "best.safetensors")
    (tmp_path / "plain.txt").write_text("x")
    assert path.stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777
