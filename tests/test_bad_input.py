"""Every kind of bad input is answered with one line naming the culprit, exit status 2, nothing written."""

import builtins
import io
import os

import numpy as np
import pytest
import torch
from conftest import make_folder
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.errors import DataError


def train(capsys, data, out, *extra):
    code = main(
        ["train", "--data", str(data), "--out", str(out), "--no-progress", "--epochs", "1", "--batch-size", "4", *extra]
    )
    return code, capsys.readouterr().err


def assert_refused(code, err, out, *needles):
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err
    assert not os.path.exists(out)


def png_bytes(size=(16, 16)):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("case", ["zero_byte", "truncated", "not_an_image", "bomb"])
def test_broken_files(tmp_path, capsys, monkeypatch, case):
    root = make_folder(tmp_path / "ds", per_class=4)
    name = os.path.join(root, "b", "zz.png")
    content = {
        "zero_byte": b"",
        "truncated": png_bytes()[:120],
        "not_an_image": b"GIF? no, a text file",
        "bomb": png_bytes((64, 64)),
    }[case]
    with open(name, "wb") as fh:
        fh.write(content)
    if case == "bomb":
        # A real bomb is a tiny file that decodes to gigapixels; lowering PIL's limit makes a 16x16 one.
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 16x16 images pass, the 64x64 one does not
    code, err = train(capsys, root, tmp_path / "run")
    assert_refused(code, err, tmp_path / "run", name, "decompression bomb" if case == "bomb" else "cannot read image")


def test_skip_bad_images_is_explicit_and_lists_them(tmp_path, capsys):
    root = make_folder(tmp_path / "ds", per_class=10)
    for name in ("bad1.png", "bad2.jpg"):
        with open(os.path.join(root, "a", name), "wb") as fh:
            fh.write(b"broken")
    ds = load_dataset(root, val_fraction=0, skip_bad=True, progress=False)
    err = capsys.readouterr().err
    assert len(ds.train) == 30 and "bad1.png" in err and "bad2.jpg" in err and "skipped 2 unreadable" in err
    with pytest.raises(DataError, match="bad1.png: cannot read image"):
        load_dataset(root, val_fraction=0, progress=False)


def test_unreadable_file(tmp_path, capsys, monkeypatch):
    # As root (CI), chmod 000 does not stop reads; simulate the OS refusing the file instead, wherever
    # it is opened (the decoder reads its bytes; PIL opens paths with the same builtin)
    root = make_folder(tmp_path / "ds", per_class=4)
    locked = os.path.join(root, "c", "img_002.png")
    real_open = builtins.open

    def refuse(path, *args, **kwargs):
        if isinstance(path, (str, bytes, os.PathLike)) and os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
    code, err = train(capsys, root, tmp_path / "run", "--threads", "1")
    assert_refused(code, err, tmp_path / "run", locked, "Permission denied")


def test_symlink_loops_are_harmless_or_named(tmp_path, capsys):
    root = make_folder(tmp_path / "ds", per_class=4)
    os.symlink(os.path.join(root, "a"), os.path.join(root, "a", "loop"))  # folder loop: not followed
    assert len(load_dataset(root, val_fraction=0, progress=False).train) == 12
    looped = os.path.join(root, "b", "self.png")
    os.symlink(looped, looped)  # a file that points to itself
    code, err = train(capsys, root, tmp_path / "run")
    assert_refused(code, err, tmp_path / "run", looped)


def test_non_utf8_file_names(tmp_path, capsys):
    root = make_folder(tmp_path / "ds", per_class=4)
    raw = os.path.join(os.fsencode(root), b"a", b"caf\xe9_\xff.png")
    with open(raw, "wb") as fh:
        fh.write(png_bytes())
    ds = load_dataset(root, val_fraction=0, progress=False)
    assert len(ds.train) == 13
    with open(raw, "wb") as fh:
        fh.write(b"broken")
    code, err = train(capsys, root, tmp_path / "run")
    assert_refused(code, err, tmp_path / "run", "caf\\udce9_\\udcff.png")


def test_mismatched_checkpoint(tmp_path, capsys):
    root = make_folder(tmp_path / "ds", per_class=10)
    out = tmp_path / "run"
    assert (
        main(["train", "--data", root, "--out", str(out), "--no-progress", "--epochs", "1", "--batch-size", "4"]) == 0
    )
    os.remove(out / "COMPLETE")
    state = {
        "model": {"w": torch.zeros(1)},
        "optimizer": {},
        "scheduler": {},
        "rng": torch.get_rng_state(),
        "epoch": 1,
        "step": 0,
        "sums": {},
        "history": [],
    }
    torch.save(state, out / "checkpoint.pt")
    assert main(["train", "--resume", str(out)]) == 2
    assert "checkpoint.pt: does not match model 'fastnet'" in capsys.readouterr().err
