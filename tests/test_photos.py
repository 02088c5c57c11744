"""Own photos: folders of mixed sizes and orientations, sizing a user expects, memory that
never surprises, small datasets that train, a bounded decode cache."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab import pipeline
from cnnlab.cli import main
from cnnlab.data import decode
from cnnlab.data.dataset import load_dataset
from cnnlab.errors import DataError
from cnnlab.presets import preset

ORIENTATION = 0x0112
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def upright_picture(height: int, width: int, colour, rng) -> np.ndarray:
    """A picture whose top third is white, so that its orientation can be seen; the rest `colour` + noise."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = colour
    img = (img + rng.integers(0, 40, img.shape)).clip(0, 255).astype(np.uint8)
    img[: height // 3] = 255
    return img


def save_photo(path, upright: np.ndarray, rotated: bool = False, fmt: str = "PNG") -> None:
    """Save as a camera would: a rotated photo is stored lying on its side with EXIF orientation 6
    (display = stored turned 90 degrees clockwise)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(upright)
    if rotated:
        exif = Image.Exif()
        exif[ORIENTATION] = 6
        img.transpose(Image.Transpose.ROTATE_90).save(path, fmt, exif=exif.tobytes())
    else:
        img.save(path, fmt)


def make_photos(root, per_class=10, test_per_class=3, seed=0) -> str:
    """train/ and test/ of 3 classes, sizes 40-120 px, aspect 0.6-1.8, PNG and JPEG, some rotated by EXIF."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for k, name in enumerate(("red", "green", "blue")):
            for i in range(count):
                height = int(rng.integers(40, 120))
                width = int(height * rng.uniform(0.6, 1.8))
                fmt = "JPEG" if i % 2 else "PNG"
                save_photo(
                    os.path.join(root, split, name, f"p{i:02d}.{fmt.lower().replace('jpeg', 'jpg')}"),
                    upright_picture(height, width, COLOURS[k], rng),
                    rotated=i % 3 == 0,
                    fmt=fmt,
                )
    return str(root)


def test_exif_orientation_is_applied_at_decode(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "phone.png")
    save_photo(path, upright_picture(60, 30, COLOURS[0], rng), rotated=True)
    assert Image.open(path).size == (60, 30)  # stored lying on its side: 60 wide, 30 high
    upright = decode.decode_file(path, (60, 30), "nearest", exif=True)
    assert (upright[:20] == 255).all() and upright[20:].mean() < 200  # white band on top: upright
    sideways = decode.decode_file(path, (30, 60), "nearest", exif=False)
    assert (sideways[:, :20] == 255).all()  # without EXIF handling the band is on the left
    assert decode.image_size_of(path, exif=True) == (60, 30) and decode.image_size_of(path) == (30, 60)


def test_resize_modes_crop_pad_squash_exactly():
    wide = np.zeros((4, 8, 3), dtype=np.uint8)
    wide[:, :, 0] = np.arange(8) * 10  # column index in the red channel
    img = Image.fromarray(wide)
    crop = decode.fit_image(img, (4, 4), "nearest", "crop")
    assert crop[0, :, 0].tolist() == [20, 30, 40, 50]  # the centre 4 columns, not scaled
    pad = decode.fit_image(img, (4, 4), "nearest", "pad")
    assert (pad[[0, 3]] == 0).all() and pad[1, :, 0].tolist() == [
        10,
        30,
        50,
        70,
    ]  # halved (nearest: centres), black bands
    squash = decode.fit_image(img, (4, 4), "nearest", "squash")
    assert squash[0, :, 0].tolist() == [10, 30, 50, 70]  # every other column, stretched


@pytest.mark.learned  # fp32: >= 80% on three colours on every CPU (bf16 emulated took 3 minutes here)
def test_mixed_sizes_get_a_printed_default_and_training_works_with_no_flag(tmp_path, capsys):
    root = make_photos(tmp_path / "photos")
    out = tmp_path / "run"
    assert main(["train", "--data", root, "--out", str(out), "--threads", "1", "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "each decoded to 32x32, shorter side scaled to fit, centre-cropped (--resize crop|pad|squash" in printed
    assert "small training set (27 images): batch_size 512 -> 8" in printed  # adapted, and said so
    assert "peak memory (resident):" in printed
    saved = json.load(open(out / "config.json"))
    assert saved["config"]["batch_size"] == 8 and saved["config"]["epochs"] == 100
    assert saved["data"]["preprocessing"]["image_size"] == [32, 32]
    assert saved["data"]["preprocessing"]["resize"] == "crop" and saved["data"]["preprocessing"]["exif"] is True
    assert any("small training set" in note for note in saved["data"]["notes"])
    metrics = json.load(open(out / "metrics.json"))
    assert metrics["test"]["accuracy"] >= 0.8  # three colours: chance is 33%
    assert 0 < metrics["peak_memory_gb"] < 4
    # predict decodes a photo exactly as training did (size, crop, EXIF)
    photo = os.path.join(root, "test", "red", "p00.png")
    ds = load_dataset(root, image_size=(32, 32), resize="crop", exif=True, interpolation="bilinear", progress=False)
    row = ds.test.files.index(os.path.join("red", "p00.png"))
    assert np.array_equal(cnnlab.load(str(out)).to_array(photo), ds.test.images[row])


def test_explicit_flags_are_never_adapted(tmp_path, capsys):
    root = make_photos(tmp_path / "photos")
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                root,
                "--out",
                str(out),
                "--threads",
                "1",
                "--batch-size",
                "16",
                "--epochs",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    cfg = json.load(open(out / "config.json"))["config"]
    assert (cfg["batch_size"], cfg["epochs"], cfg["lr"]) == (16, 2, 0.4)


def test_seed_preset_keeps_keras_squash_nearest_without_exif(tmp_path):
    root = make_photos(tmp_path / "photos", per_class=10, test_per_class=1)
    cfg = preset("seed", data=root, progress=False)
    ds = pipeline.load_data(cfg)
    assert ds.image_shape == (256, 256, 3)
    for row, rel in enumerate(ds.train.files[:6]):
        with Image.open(os.path.join(root, "train", rel)) as raw:  # as stored, EXIF ignored
            expected = np.asarray(raw.convert("RGB").resize((256, 256), Image.Resampling.NEAREST))
        assert np.array_equal(ds.train.images[row], expected), rel


def test_non_square_input_size_trains_and_predicts(tmp_path):
    root = make_photos(tmp_path / "photos")
    out = str(tmp_path / "run")
    cfg = preset("fast", data=root, input_size="24x40", epochs=1, batch_size=8, threads=1, progress=False)
    cnnlab.train_run(cfg, out)
    saved = json.load(open(os.path.join(out, "config.json")))["data"]["preprocessing"]
    assert saved["image_size"] == [24, 40] and saved["input_size"] == [24, 40]
    assert list(saved) == ["mean", "std", "image_size", "input_size", "interpolation", "resize", "exif"]
    probs = cnnlab.load(out).predict([os.path.join(root, "test", "blue", "p01.jpg")])
    assert probs.shape == (1, 3) and abs(probs.sum() - 1) < 1e-5


def test_a_dataset_larger_than_the_cache_disk_is_refused_up_front(tmp_path, capsys, monkeypatch):
    root = make_photos(tmp_path / "photos")
    cache = tmp_path / "cache"
    monkeypatch.setenv("CNNLAB_CACHE", str(cache))
    monkeypatch.setattr("cnnlab.data.decode.cache_room", lambda: 80_000)  # 80 kB free on the cache's disk
    code = main(["train", "--data", root, "--out", str(tmp_path / "run"), "--image-size", "64"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    # 39 images (train and test) at 64x64x3 = 479 kB > 80 kB; sqrt(80,000 / (3 * 39)) = 26.1
    assert f"decoding 39 images at 64x64 needs 0.0 GB, more than the 0.0 GB free for the decode cache ({cache}" in err
    assert "--image-size 26 would fit" in err
    assert not os.path.exists(tmp_path / "run") and not os.path.exists(cache)  # nothing decoded or written
    with pytest.raises(DataError, match="more than the 0.0 GB allowed"):
        load_dataset(root, image_size=64, memory_budget=200_000, progress=False)


def test_a_dataset_larger_than_memory_is_decoded_into_the_cache_and_trained_from_it(tmp_path, monkeypatch):
    root = make_photos(tmp_path / "photos")
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("cnnlab.device.available_memory", lambda: 100_000)  # 100 kB: less than the images
    ds = load_dataset(root, image_size=64, progress=False)
    assert isinstance(ds.train.stored, np.memmap) and ds.train.nbytes > 100_000
    # where the cache cannot be written, the images would be in memory: refused, saying what would do
    monkeypatch.setattr("cnnlab.data.decode.cache_dir", lambda: os.devnull + "/cache")
    with pytest.raises(
        DataError,
        match=r"need 0.0 GB in memory without the decode cache, more than the 0.0 GB "
        r"available: make /dev/null/cache writable \(or set CNNLAB_CACHE\), or --image-size \d+ would fit",
    ):
        load_dataset(root, image_size=32, progress=False)


def test_a_folder_already_in_the_cache_needs_no_room(tmp_path, monkeypatch):
    root = make_photos(tmp_path / "photos")
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    load_dataset(root, image_size=16, progress=False)
    monkeypatch.setattr("cnnlab.data.decode.cache_room", lambda: 0)  # the disk is full now
    assert len(load_dataset(root, image_size=16, progress=False).train) > 0
    with pytest.raises(DataError, match="free for the decode cache"):
        load_dataset(root, image_size=17, progress=False)


def test_the_cache_is_memory_mapped_and_splits_share_it(tmp_path):
    root = make_photos(tmp_path / "photos", per_class=20)
    ds = load_dataset(root, image_size=32, val_fraction=0.2, progress=False)
    ds = load_dataset(root, image_size=32, val_fraction=0.2, progress=False)  # second load: from the cache
    assert isinstance(ds.train.stored, np.memmap) and ds.train.stored is ds.val.stored
    assert len(ds.train) == 48 and len(ds.val) == 12 and len(ds.train.stored) == 60


def test_streaming_gives_the_same_run_as_the_in_memory_path(tmp_path, capsys):
    root = make_photos(tmp_path / "photos")
    # on the CPU, where training is deterministic (a GPU's backward need not be): the loader path is what differs
    common = dict(data=root, epochs=2, batch_size=8, threads=1, progress=False, device="cpu")
    cnnlab.train_run(preset("fast", **common), str(tmp_path / "memory"))
    capsys.readouterr()
    cnnlab.train_run(preset("fast", **{**common, "progress": True}, device_memory_gb=1e-6), str(tmp_path / "stream"))
    assert "stream from the host cache" in capsys.readouterr().out
    history = [json.load(open(tmp_path / d / "history.json")) for d in ("memory", "stream")]

    def strip(history):
        return [{k: v for k, v in r.items() if "time" not in k} for r in history]

    assert strip(history[0]) == strip(history[1])
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("memory", "stream"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cache_evicts_least_recently_used_and_cache_commands(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CNNLAB_CACHE", str(cache))
    first, second = make_photos(tmp_path / "a", seed=1), make_photos(tmp_path / "b", seed=2)
    load_dataset(first, image_size=32, progress=False)
    entries = decode.cache_entries()
    assert len(entries) == 2  # train and test of the first dataset
    size = sum(e[1] for e in entries)
    monkeypatch.setenv("CNNLAB_CACHE_GB", str(size * 1.5 / 1e9))  # room for one dataset and a half
    load_dataset(second, image_size=32, progress=False)
    left = {os.path.basename(p) for p, _, _ in decode.cache_entries()}
    assert len(left) == 3 and {os.path.basename(p) for p, _, _ in entries[1:]} <= left  # the oldest went
    assert main(["cache", "info"]) == 0
    info = capsys.readouterr().out
    assert "3 entries" in info and str(cache) in info
    assert main(["cache", "clear"]) == 0 and decode.cache_entries() == []
