"""What keeps cost linear in the number of images, pinned by counting the work (never by timing it):
the scan asks the file system nothing per file beyond its directory entries, the cache key stats each
file once and reads none."""

import builtins
import io
import os

import numpy as np
import pytest
import torch
from conftest import make_folder

from cnnlab.data import decode
from cnnlab.data.folder import scan_folder
from cnnlab.data.loader import Augmentation, DeviceLoader, FileRows, Holding, Sampling, rows_to_device


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


def cached_split(tmp_path, monkeypatch, per_class=12):
    from cnnlab.data import load_dataset

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "ds", per_class=per_class, size=8)
    split = load_dataset(root, val_fraction=0.25, split="random", progress=False).train
    assert isinstance(split.stored, np.memmap)
    return split


def batches(split, stream):
    loader = DeviceLoader(
        split.stored,
        split.labels,
        4,
        torch.device("cpu"),
        hold=Holding(split.index, stream),
        augment=Augmentation(flip=True, translate=2),
        sampling=Sampling(shuffle=True, seed=3),
    )
    return loader, [(x.clone(), y.clone()) for x, y in loader]


def test_a_large_split_on_a_cpu_is_read_from_the_cache_file_never_through_the_map(tmp_path, monkeypatch):
    split = cached_split(tmp_path, monkeypatch)
    in_place = batches(split, stream=False)[1]
    monkeypatch.setattr(np.memmap, "__getitem__", lambda *a: pytest.fail("the map itself was read"))
    loader, streamed = batches(split, stream=True)
    assert loader.reader is not None
    assert len(streamed) == len(in_place) and all(
        torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(in_place, streamed)
    )


def test_file_rows_are_the_rows_of_the_map(tmp_path, monkeypatch):
    split = cached_split(tmp_path, monkeypatch)
    rows = np.array([5, 0, 5, len(split.stored) - 1, 2])
    reader = FileRows.open(split.stored)
    assert np.array_equal(reader.take(rows), np.asarray(split.stored)[rows])
    assert FileRows.open(np.asarray(split.stored)) is None  # an array in memory is indexed as one
    assert FileRows.open(split.stored[1:]) is None  # a slice of the map starts elsewhere in the file


def test_rows_go_to_the_device_a_chunk_at_a_time(tmp_path, monkeypatch):
    split = cached_split(tmp_path, monkeypatch)
    reader = FileRows.open(split.stored)
    taken = []
    real = reader.take
    monkeypatch.setattr(reader, "take", lambda rows: taken.append(len(rows)) or real(rows))
    row_bytes = int(np.prod(split.stored.shape[1:]))
    out = rows_to_device(split.stored, split.index, torch.device("cpu"), reader, chunk_bytes=4 * row_bytes)
    assert torch.equal(out, torch.from_numpy(np.asarray(split.stored)[split.index]))
    assert max(taken) == 4 and sum(taken) == len(split.index)


def test_a_cpu_streams_a_mapped_split_larger_than_the_in_place_limit(tmp_path, monkeypatch):
    from cnnlab import pipeline
    from cnnlab.config import Config

    split = cached_split(tmp_path, monkeypatch)
    cpu = torch.device("cpu")
    assert not pipeline.should_stream(split, Config(), cpu)
    monkeypatch.setattr(pipeline, "CPU_IN_PLACE_BYTES", split.nbytes - 1)
    assert pipeline.should_stream(split, Config(), cpu)
    in_memory = type(split)(np.asarray(split.stored), split.labels, split.files, split.index)
    assert not pipeline.should_stream(in_memory, Config(), cpu)  # nothing to gain: it is in memory already


def test_decode_workers_leave_the_syncing_to_the_finished_file(tmp_path, monkeypatch):
    # a worker synced the whole cache file, not only its chunk, after each chunk: the file is synced once
    from cnnlab.data import load_dataset

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "ds", per_class=40, size=4)
    parent, real = os.getpid(), np.memmap.flush

    def flush(self):
        if os.getpid() != parent:  # a forked worker process
            raise AssertionError("a worker synced the cache file")
        real(self)

    monkeypatch.setattr(np.memmap, "flush", flush)
    monkeypatch.setattr(decode, "_chunks", lambda paths, workers: (range(0, len(paths), 16), 16))
    images, _ = decode.load_images(root, scan_folder(root).files, decode.DecodePlan((4, 4)), "k" * 64, False)
    assert images.shape == (120, 4, 4, 3) and images.any()
    assert np.array_equal(images, load_dataset(root, val_fraction=0, progress=False).train.images)
