"""Loading a folder dataset is one pass: scan, decide the stored size and check the memory, decode, split.
The size is decided before anything is decoded, so each folder is decoded once, at that size."""

import os

import numpy as np
import pytest
from conftest import make_folder
from PIL import Image

from cnnlab.data import decode, load_dataset
from cnnlab.errors import DataError


@pytest.fixture
def mixed(tmp_path, monkeypatch):
    """train/ (3 classes x 4 images of 8x8, and one of 20x12 in class b) and test/ (3 x 4 of 8x8)."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ds"
    make_folder(root / "train", per_class=4, size=8)
    make_folder(root / "test", per_class=4, size=8, seed=1)
    Image.fromarray(np.full((20, 12, 3), 90, dtype=np.uint8)).save(root / "train" / "b" / "img_002b.png")
    return str(root)


def record_decodes(monkeypatch) -> list[tuple[int, int]]:
    sizes = []
    real = decode.decode_files

    def spy(paths, plan, *args, **kwargs):
        sizes.append(tuple(plan.size))
        return real(paths, plan, *args, **kwargs)

    monkeypatch.setattr(decode, "decode_files", spy)
    return sizes


def test_a_folder_of_several_sizes_is_decoded_once_at_the_size_decided_before(mixed, monkeypatch):
    decoded = record_decodes(monkeypatch)
    ds = load_dataset(mixed, val_fraction=0, fallback_size=(10, 10), progress=False)
    assert decoded == [(10, 10), (10, 10)]  # training and test folders, each once
    assert ds.image_shape == (10, 10, 3) and (len(ds.train), len(ds.test)) == (13, 12)
    train = os.path.join(mixed, "train")
    assert ds.notes == [
        f"{train}: images of several sizes (20x12 in img_002b.png, 10x10 ...): each decoded to "
        "10x10, stretched to the size (--resize crop|pad|squash; --image-size, --input-size HxW "
        "to choose)"
    ]
    odd = ds.train.files.index(os.path.join("b", "img_002b.png"))
    assert (ds.train.images[odd] == 90).all()
    decoded.clear()
    again = load_dataset(mixed, val_fraction=0, fallback_size=(10, 10), progress=False)
    assert decoded == [] and np.array_equal(again.train.images, ds.train.images)  # from the cache


def test_the_memory_is_checked_at_the_decided_size_before_anything_is_decoded(mixed, monkeypatch):
    decoded = record_decodes(monkeypatch)
    # 25 images: 4,800 bytes at 8x8 (the first image's size) fit 6,000, 7,500 at 10x10 do not
    with pytest.raises(
        DataError,
        match="train: decoding 25 images at 10x10 needs 0.0 GB, more than the 0.0 GB "
        r"allowed \(--memory-gb\); --image-size 8 would fit",
    ):
        load_dataset(mixed, val_fraction=0, fallback_size=(10, 10), memory_budget=6_000, progress=False)
    assert decoded == []


def test_a_folder_of_one_size_is_stored_at_it_and_its_headers_are_read_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "ds", per_class=4, size=8)
    read = []
    real = decode.read_sizes
    monkeypatch.setattr(decode, "read_sizes", lambda paths, *a, **k: read.append(len(paths)) or real(paths, *a, **k))
    first = load_dataset(root, val_fraction=0, fallback_size=(16, 16), progress=False)
    assert first.image_shape == (8, 8, 3) and first.notes == [] and read == [12]
    again = load_dataset(root, val_fraction=0, fallback_size=(16, 16), progress=False)
    assert read == [12] and np.array_equal(again.train.images, first.train.images)  # a cached folder: no headers


def test_the_stored_size_depends_on_the_folder_not_on_what_the_cache_holds(tmp_path, monkeypatch):
    """16x16 and 24x24 images, a 32x32 fallback: stored at 32x32 on a fresh cache, and still after a decode
    of the same folder at 16x16 (--image-size 16), which is the first image's size."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "ds", per_class=4, size=16)
    Image.fromarray(np.zeros((24, 24, 3), dtype=np.uint8)).save(tmp_path / "ds" / "b" / "img_002b.png")
    fresh = load_dataset(root, val_fraction=0, fallback_size=(32, 32), progress=False)
    assert fresh.image_shape == (32, 32, 3) and "images of several sizes (24x24 in img_002b.png" in fresh.notes[0]
    decode.clear_cache()
    assert load_dataset(root, val_fraction=0, image_size=16, progress=False).image_shape == (16, 16, 3)
    after = load_dataset(root, val_fraction=0, fallback_size=(32, 32), progress=False)
    assert after.image_shape == (32, 32, 3) and after.notes == fresh.notes


def test_a_png_size_read_from_its_header_bytes_is_the_size_pil_reads(tmp_path):
    for height, width in ((8, 8), (20, 12), (3, 300)):
        path = str(tmp_path / f"{height}x{width}.png")
        Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(path)
        assert decode.png_size(path) == decode.png_size(path, exif=True) == decode.image_size_of(path)
        assert decode.image_size_of(path) == (height, width)
    rotated = str(tmp_path / "rotated.png")  # lying on its side, EXIF orientation 6: upright it is 12x20
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((20, 12, 3), dtype=np.uint8)).save(rotated, exif=exif.tobytes())
    assert decode.png_size(rotated) == (20, 12) and decode.png_size(rotated, exif=True) is None
    assert decode.read_sizes([rotated], exif=True, progress=False, workers=1) == [(12, 20)]
    jpeg = str(tmp_path / "photo.png")  # a JPEG under a PNG name: read by PIL
    Image.fromarray(np.zeros((10, 6, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    assert decode.png_size(jpeg) is None and decode.read_sizes([jpeg], progress=False, workers=1) == [(10, 6)]
    (tmp_path / "short.png").write_bytes(b"\x89PNG\r\n")
    assert decode.read_sizes([str(tmp_path / "short.png")], progress=False, workers=1) == [None]
