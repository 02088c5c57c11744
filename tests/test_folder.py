"""The folder scanner follows Keras's flow_from_directory rules."""

import os

import numpy as np
import pytest
from conftest import make_folder, write_image

from cnnlab.data import load_dataset
from cnnlab.data.folder import list_classes, scan_folder
from cnnlab.errors import DataError

PIXELS = np.full((4, 4, 3), 7, dtype=np.uint8)


def test_extensions_case_insensitive_nested_and_sorted(tmp_path):
    root = tmp_path / "root"
    write_image(root / "cat" / "b.PNG", PIXELS)
    write_image(root / "cat" / "a.jpg", PIXELS)
    write_image(root / "cat" / "sub" / "c.png", PIXELS)
    (root / "cat" / "notes.txt").write_text("not an image")
    write_image(root / "dog" / "x.Bmp", PIXELS)
    scan = scan_folder(str(root))
    assert scan.classes == ["cat", "dog"]
    assert scan.files == ["cat/a.jpg", "cat/b.PNG", os.path.join("cat", "sub", "c.png"), "dog/x.Bmp"]
    assert scan.labels == [0, 0, 0, 1]


def test_nested_folders_come_in_keras_path_order(tmp_path):
    # Keras sorts os.walk's folder paths as strings: "cat/a" < "cat/a-x" < "cat/a/b" ('-' sorts before '/')
    root = tmp_path / "root"
    for rel in ("cat/z.png", "cat/B/1.png", "cat/a/b/1.png", "cat/a-x/1.png", "cat/a/1.png"):
        write_image(root / rel, PIXELS)
    expected = ["cat/z.png", "cat/B/1.png", "cat/a/1.png", "cat/a-x/1.png", "cat/a/b/1.png"]
    assert scan_folder(str(root)).files == [p.replace("/", os.sep) for p in expected]


def test_a_folder_that_cannot_be_listed_is_named(tmp_path, monkeypatch):
    root = tmp_path / "root"
    write_image(root / "cat" / "a.png", PIXELS)
    (root / "cat" / "locked").mkdir()
    real = os.scandir

    def scandir(path):  # as a folder without read permission answers (root reads every folder)
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match="locked: cannot read folder .Permission denied.; check its permissions"):
        scan_folder(str(root))


def test_symlinked_folders_are_not_followed(tmp_path):
    root = tmp_path / "root"
    write_image(root / "cat" / "a.png", PIXELS)
    write_image(tmp_path / "elsewhere" / "b.png", PIXELS)
    os.symlink(tmp_path / "elsewhere", root / "cat" / "linked")
    assert scan_folder(str(root)).files == ["cat/a.png"]


def test_non_image_files_in_root_are_not_classes(tmp_path):
    root = tmp_path / "root"
    write_image(root / "cat" / "a.png", PIXELS)
    (root / ".DS_Store").write_bytes(b"\0\1")
    assert list_classes(str(root)) == ["cat"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such folder"),
        ("file", "is a file"),
        ("empty_class", "class folder holds no images"),
        ("stray_image", "image outside any class folder"),
        ("no_classes", "no class folders"),
    ],
)
def test_bad_layouts_name_the_culprit(tmp_path, case, message):
    root = tmp_path / "root"
    if case == "file":
        root.write_text("x")
    elif case != "missing":
        root.mkdir()
        if case != "no_classes":
            write_image(root / "cat" / "a.png", PIXELS)
        if case == "empty_class":
            (root / "dog").mkdir()
        if case == "stray_image":
            write_image(root / "loose.png", PIXELS)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(str(root), val_fraction=0, progress=False)
    assert str(root) in str(err.value)


def test_train_test_class_mismatch_lists_the_difference(tmp_path):
    make_folder(tmp_path / "ds" / "train", classes=("a", "b", "c"))
    make_folder(tmp_path / "ds" / "test", classes=("a", "b", "d"))
    with pytest.raises(DataError, match="only in train: c; only in test: d"):
        load_dataset(str(tmp_path / "ds"), val_fraction=0, progress=False)


def test_class_folder_root_has_no_test_split(tmp_path):
    root = make_folder(tmp_path / "flat", per_class=10)
    ds = load_dataset(root, val_fraction=0.2, progress=False)
    assert ds.test is None and len(ds.train) == 24 and len(ds.val) == 6
