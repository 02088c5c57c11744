"""Decoding: colour modes, sizes, corrupt files, and the cache that makes a second load free."""

import os

import numpy as np
import pytest
from conftest import make_folder
from PIL import Image

from cnnlab.data import decode, load_dataset
from cnnlab.errors import DataError


def test_second_load_reads_the_cache_and_changes_invalidate_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "ds", per_class=4)
    first = load_dataset(root, val_fraction=0, progress=False).train.images

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(decode, "decode_files", no_decode)
    assert np.array_equal(load_dataset(root, val_fraction=0, progress=False).train.images, first)
    path = os.path.join(root, "a", "img_000.png")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path)
    os.utime(path, ns=(1, 1))
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(root, val_fraction=0, progress=False)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA"])
def test_other_colour_modes_become_rgb(tmp_path, mode):
    rgb = Image.fromarray(np.full((5, 5, 3), 200, dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(np.full((5, 5), 200 * 257, dtype=np.uint16))
    else:
        img = rgb.convert(mode, palette=Image.Palette.ADAPTIVE) if mode == "P" else rgb.convert(mode)
    path = str(tmp_path / ("x.tif" if mode == "CMYK" else "x.png"))
    img.save(path)
    out = decode.decode_file(path, (5, 5), "nearest")
    assert out.shape == (5, 5, 3) and out.dtype == np.uint8
    assert abs(int(out[0, 0, 0]) - 200) <= 2


def test_16_bit_images_are_scaled_by_their_range_and_8_bit_values_in_mode_i_kept(tmp_path):
    wide = np.array([[0, 256, 257 * 100, 65280, 65535]], dtype=np.uint16)  # values above 255: 16-bit, x 1/257
    Image.fromarray(wide).save(tmp_path / "wide.png")
    narrow = np.array([[0, 7, 100, 255]], dtype=np.int32)  # mode I holding 0-255: kept as they are
    Image.fromarray(narrow).save(tmp_path / "narrow.tif")
    assert Image.open(tmp_path / "narrow.tif").mode == "I"
    assert decode.decode_file(str(tmp_path / "wide.png"), (1, 5), "nearest")[0, :, 0].tolist() == [0, 1, 100, 254, 255]
    assert decode.decode_file(str(tmp_path / "narrow.tif"), (1, 4), "nearest")[0, :, 0].tolist() == [0, 7, 100, 255]


def test_images_of_another_size_are_resized_to_the_first(tmp_path):
    root = make_folder(tmp_path / "ds", per_class=2, size=8)
    Image.fromarray(np.zeros((20, 12, 3), dtype=np.uint8)).save(os.path.join(root, "b", "img_999.png"))
    ds = load_dataset(root, val_fraction=0, progress=False)
    assert ds.image_shape == (8, 8, 3) and len(ds.train) == 7


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n broken", b"plain text, not an image"])
def test_corrupt_image_names_the_file(tmp_path, content):
    root = make_folder(tmp_path / "ds", per_class=2)
    bad = os.path.join(root, "c", "zz_bad.png")
    with open(bad, "wb") as fh:
        fh.write(content)
    with pytest.raises(DataError, match="zz_bad.png: cannot read image"):
        load_dataset(root, val_fraction=0, progress=False)
