"""`cnnlab data info` describes a dataset whose classes are too small
for the validation split instead of refusing it; training still refuses it, naming the classes."""

import os

from conftest import make_folder

from cnnlab.cli import main


def test_data_info_describes_small_classes_and_names_them(tmp_path, capsys):
    root = tmp_path / "ds"
    make_folder(root / "train", classes=("big", "small"), per_class=12)
    for name in sorted(os.listdir(root / "train" / "small"))[5:]:
        os.remove(root / "train" / "small" / name)  # 5 images: int(0.1 * 5) = 0 validation images
    assert main(["data", "info", str(root), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Found 16 images belonging to 2 classes.  (training)" in out
    assert "Found 1 images belonging to 2 classes.  (validation)" in out
    assert "images per class (training + validation): big 12, small 5" in out
    assert "gives no validation images to 1 class(es): small (fewer than 10 images each)" in out


def test_training_refuses_it_naming_the_class(tmp_path, capsys):
    root = tmp_path / "ds"
    make_folder(root, classes=("big", "small"), per_class=12)
    for name in sorted(os.listdir(root / "small"))[5:]:
        os.remove(root / "small" / name)
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "leaves 1 class(es) without validation images (small: fewer than 10" in err
    assert not os.path.exists(tmp_path / "run")
