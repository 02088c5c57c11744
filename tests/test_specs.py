"""The data functions take small spec objects; their fields may be given by name instead, with the same result."""

import numpy as np
import pytest
import torch
from conftest import make_folder

from cnnlab.data import Augmentation, Decoding, DeviceLoader, Feed, Holding, Sampling, Splitting, load_dataset

CPU = torch.device("cpu")


def test_a_loader_built_from_specs_gives_the_batches_of_one_built_from_their_fields():
    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(40)
    specs = DeviceLoader(
        images,
        labels,
        8,
        CPU,
        feed=Feed([0.5] * 3, [0.25] * 3, 12),
        augment=Augmentation(flip=True, translate=1, cutout=2, brightness=0.1),
        sampling=Sampling(shuffle=True, drop_last=True, seed=4),
    )
    named = DeviceLoader(
        images,
        labels,
        8,
        CPU,
        mean=[0.5] * 3,
        std=[0.25] * 3,
        input_size=12,
        flip=True,
        translate=1,
        cutout=2,
        brightness=0.1,
        shuffle=True,
        drop_last=True,
        seed=4,
    )
    for epoch in (1, 2):
        specs.set_epoch(epoch)
        named.set_epoch(epoch)
        pairs = list(zip(specs, named))
        assert len(pairs) == 5
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)
    assert not Augmentation() and Augmentation(cutout=2)


def test_a_loader_holds_the_rows_it_is_given_streamed_or_not_and_by_spec_or_by_name():
    images = np.random.default_rng(1).integers(0, 256, (30, 6, 6, 3), dtype=np.uint8)
    rows = np.array([29, 3, 7, 11, 0, 5, 18, 22, 9, 14, 2, 27])
    labels = np.arange(len(rows))
    common = dict(shuffle=True, flip=True, translate=1, seed=2)
    copied = DeviceLoader(images[rows], labels, 4, CPU, **common)
    held = DeviceLoader(images, labels, 4, CPU, hold=Holding(rows), **common)
    streamed = DeviceLoader(images, labels, 4, CPU, hold=Holding(rows, stream=True), **common)
    named = DeviceLoader(images, labels, 4, CPU, rows=rows, stream=True, **common)
    assert streamed.stream and named.stream and not held.stream and not copied.stream
    for epoch in (0, 1):
        batches = []
        for loader in (copied, held, streamed, named):
            loader.set_epoch(epoch)
            batches.append(list(loader))
        assert len(batches[0]) == 3
        for other in batches[1:]:
            assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches[0], other))


def test_an_unknown_field_is_refused_as_an_unknown_keyword():
    with pytest.raises(TypeError, match="DeviceLoader.*'flipp'"):
        DeviceLoader(np.zeros((2, 4, 4, 3), dtype=np.uint8), np.arange(2), 2, CPU, flipp=True)
    with pytest.raises(TypeError, match="load_dataset.*'val_fractoin'"):
        load_dataset("anywhere", val_fractoin=0.1)


def test_load_dataset_takes_specs_or_their_fields(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "ds", per_class=10)
    specs = load_dataset(
        root,
        Decoding(image_size=12, interpolation="bilinear"),
        Splitting(val_fraction=0.2, split="random", seed=3),
        progress=False,
    )
    named = load_dataset(
        root, image_size=12, interpolation="bilinear", val_fraction=0.2, split="random", seed=3, progress=False
    )
    assert specs.image_shape == (12, 12, 3) and specs.val.files == named.val.files
    assert np.array_equal(specs.train.images, named.train.images)
