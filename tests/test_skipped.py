"""--skip-bad-images: what was left out is recorded in the run directory (skipped.json, the count in
config.json, the report), the decode cache's key records the choice, and a class left with no image is
an error; without the flag a bad file stops the run with one line and nothing written."""

import io
import os
import pathlib

import numpy as np
import pytest
from conftest import make_folder
from PIL import Image

from cnnlab import runs
from cnnlab.cli import main
from cnnlab.data import decode, load_dataset
from cnnlab.errors import DataError
from cnnlab.report import build_report

BAD = {"bad_text.jpg": b"not an image, a text file named .jpg", "bad_zero.jpg": b""}  # + bad_truncated.jpg
TRAIN_BAD = ["b/bad_text.jpg", "b/bad_truncated.jpg", "b/bad_zero.jpg"]  # in Keras's (sorted) order
FLAGS = ["--epochs", "1", "--batch-size", "8", "--eval-batch-size", "64", "--threads", "1", "--no-progress"]


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def write_bad(folder, names=("bad_text.jpg", "bad_truncated.jpg", "bad_zero.jpg")) -> None:
    for name in names:
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(BAD.get(name, truncated_jpeg()))


def bad_dataset(root) -> str:
    """train/ (12 good images a class, and 3 bad ones in b) and test/ (4 a class, a zero-byte one in c)."""
    make_folder(root / "train", per_class=12)
    make_folder(root / "test", per_class=4, seed=1)
    write_bad(root / "train" / "b")
    write_bad(root / "test" / "c", ["bad_zero.jpg"])
    return str(root)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("CNNLAB_CACHE", str(folder))
    return folder


def listing(folder) -> set[str]:
    return set(os.listdir(folder)) if os.path.isdir(folder) else set()


def test_without_the_flag_the_run_stops_naming_the_first_bad_file_and_writes_nothing(tmp_path, cache, capsys):
    data = bad_dataset(tmp_path / "ds")
    out = tmp_path / "run"
    assert main(["train", "--data", data, "--out", str(out), *FLAGS]) == 2
    err = capsys.readouterr().err
    first = os.path.join(data, "train", TRAIN_BAD[0])
    assert err.startswith(f"error: {first}: cannot read image") and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    # no half-written decode nor list of skipped files (the folder's size survey, whole, may stay)
    assert not [name for name in listing(cache) if ".tmp-" in name or name.endswith(".skipped.json")]


def test_with_the_flag_the_run_records_what_it_skipped(tmp_path, cache, capsys):
    data = bad_dataset(tmp_path / "ds")
    out = str(tmp_path / "run")
    assert main(["train", "--data", data, "--out", out, *FLAGS, "--skip-bad-images"]) == 0
    err = capsys.readouterr().err
    train_root, test_root = os.path.join(data, "train"), os.path.join(data, "test")
    assert f"skipped 3 unreadable image(s) of 39 in {train_root}" in err
    assert f"skipped 1 unreadable image(s) of 13 in {test_root}" in err
    for name in TRAIN_BAD:
        assert f"skipped: {os.path.join(train_root, name)}: " in err

    skipped = runs.read_json(os.path.join(out, runs.SKIPPED))
    assert list(skipped) == ["train", "test"]
    assert [e["path"] for e in skipped["train"]] == [os.path.join(train_root, n) for n in TRAIN_BAD]
    assert [e["path"] for e in skipped["test"]] == [os.path.join(test_root, "c", "bad_zero.jpg")]
    assert all(e["reason"] and not e["reason"].startswith(e["path"]) for es in skipped.values() for e in es)
    saved = runs.read_json(os.path.join(out, runs.CONFIG))["data"]
    assert saved["skipped"] == {"train": 3, "test": 1}
    assert saved["sizes"]["training"] + saved["sizes"]["validation"] == 36 and saved["sizes"]["test"] == 12
    assert runs.read_json(os.path.join(out, runs.METRICS))["test"]["n"] == 12

    md = pathlib.Path(build_report(out)[0]).read_text()
    assert (
        "**4 unreadable image(s) skipped** (--skip-bad-images; all listed in `skipped.json`): 3 in train, "
        "1 in test." in md
    )
    for entry in skipped["train"] + skipped["test"]:
        assert f"{entry['path']}: {entry['reason']}" in md


def test_a_run_that_skipped_nothing_writes_no_skipped_file(tmp_path, cache):
    root = tmp_path / "ds"
    make_folder(root / "train", per_class=12)
    out = str(tmp_path / "run")
    assert main(["train", "--data", str(root), "--out", out, *FLAGS, "--skip-bad-images"]) == 0
    assert not os.path.exists(os.path.join(out, runs.SKIPPED))
    assert runs.read_json(os.path.join(out, runs.CONFIG))["data"]["skipped"] == {}
    assert "unreadable" not in pathlib.Path(build_report(out)[0]).read_text()


def test_a_class_left_without_images_is_a_one_line_error(tmp_path, cache, capsys):
    root = tmp_path / "ds"
    make_folder(root, per_class=12)
    for path in (root / "c").iterdir():
        path.write_bytes(b"")
    out = tmp_path / "run"
    assert main(["train", "--data", str(root), "--out", str(out), *FLAGS, "--skip-bad-images"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"error: {root / 'c'}: class 'c' has no readable image (12 skipped)"), lines
    assert not out.exists()


def forbid_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(decode, "decode_files", refuse)


def test_the_cache_key_records_the_skip_choice(tmp_path, cache, monkeypatch, capsys):
    data = bad_dataset(tmp_path / "ds")
    first = load_dataset(data, val_fraction=0, skip_bad=True, progress=False)
    assert len(first.train) == 36 and len(first.test) == 12 and sorted(first.skipped) == ["test", "train"]
    assert len(decode.cache_entries()) == 2  # the decodes that skipped files are cached, under their own key

    with monkeypatch.context() as patch:
        forbid_decoding(patch)
        again = load_dataset(data, val_fraction=0, skip_bad=True, progress=False)
    assert again.skipped == first.skipped
    assert np.array_equal(again.train.images, first.train.images) and again.train.files == first.train.files
    assert "skipped 3 unreadable image(s)" in capsys.readouterr().err  # said again, from the cache

    with pytest.raises(DataError, match="bad_text.jpg: cannot read image"):  # not the skipping decode's cache
        load_dataset(data, val_fraction=0, progress=False)


def test_a_clean_folder_is_cached_once_with_or_without_skipping(tmp_path, cache, monkeypatch):
    root = tmp_path / "ds"
    make_folder(root, per_class=6)
    skipping = load_dataset(str(root), val_fraction=0, skip_bad=True, progress=False)
    assert skipping.skipped == {} and len(decode.cache_entries()) == 1
    forbid_decoding(monkeypatch)
    plain = load_dataset(str(root), val_fraction=0, progress=False)
    assert np.array_equal(plain.train.images, skipping.train.images)
    assert len(decode.cache_entries()) == 1


def test_clearing_the_cache_removes_the_skipped_lists(tmp_path, cache):
    load_dataset(bad_dataset(tmp_path / "ds"), val_fraction=0, skip_bad=True, progress=False)
    assert any(name.endswith(".json") for name in listing(cache))
    decode.clear_cache()
    assert listing(cache) == set()
