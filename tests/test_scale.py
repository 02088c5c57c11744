"""What keeps cost linear in the number of images, pinned by counting the work (never by timing it):
the scan asks the file system nothing per file beyond its directory entries, the cache key stats each
file once and reads none."""

import builtins
import io
import os

from conftest import make_folder

from cnnlab.data import decode
from cnnlab.data.folder import scan_folder


def counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    return calls


def test_the_scan_makes_no_stat_per_file(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "ds", classes=("a", "b", "c"), per_class=40, size=4)
    os.makedirs(os.path.join(root, "a", "nested"))
    stats = counting(monkeypatch, os, "stat")
    lstats = counting(monkeypatch, os, "lstat")
    scan = scan_folder(root)
    assert len(scan.files) == 120
    assert len(stats) + len(lstats) <= 3 + 2  # the root and each class folder: is it a folder?


def test_the_cache_key_stats_each_file_once_and_reads_none(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "ds", per_class=30, size=4)
    files = scan_folder(root).files
    stats = counting(monkeypatch, os, "stat")

    def no_reading(path, *args, **kwargs):
        raise AssertionError(f"{path} opened")

    monkeypatch.setattr(builtins, "open", no_reading)
    monkeypatch.setattr(io, "open", no_reading)
    key = decode.folder_digest(root, files)
    monkeypatch.undo()
    assert sorted(stats) == sorted(os.path.join(root, name) for name in files)
    assert decode.folder_digest(root, files) == key  # the same on another call (threads keep the order)
    os.utime(os.path.join(root, files[-1]), ns=(1, 1))
    assert decode.folder_digest(root, files) != key


def test_links_are_listed_by_their_entry_never_followed(tmp_path):
    # telling a link to a folder from one to a file would take a stat a file: a link counts as a file
    # (Keras would skip a linked folder) and one that is not an image is refused when decoded
    root = make_folder(tmp_path / "ds", per_class=2, size=4)
    os.makedirs(tmp_path / "elsewhere" / "deeper")
    os.symlink(tmp_path / "elsewhere", os.path.join(root, "a", "folder.png"))
    os.symlink(os.path.join(root, "b", "img_000.png"), os.path.join(root, "a", "linked.png"))
    files = scan_folder(root).files
    assert [f for f in files if f.startswith("a" + os.sep)] == [
        os.path.join("a", name) for name in ("folder.png", "img_000.png", "img_001.png", "linked.png")
    ]
    assert decode.decode_file(os.path.join(root, "a", "linked.png"), (4, 4), "nearest").shape == (4, 4, 3)
    try:
        decode.decode_file(os.path.join(root, "a", "folder.png"), (4, 4), "nearest")
    except decode.DataError as exc:
        assert "folder.png: cannot read image" in str(exc)
    else:
        raise AssertionError("a folder was decoded")
