"""One way to call each data function: load_dataset (the public one) takes plain keyword options, the
DeviceLoader its spec objects; neither takes the other shape."""

import dataclasses
import inspect

import numpy as np
import pytest
import torch
from conftest import make_folder

from cnnlab.data import (
    Augmentation,
    Decoding,
    DeviceLoader,
    Holding,
    Sampling,
    Splitting,
    load_dataset,
    read_dataset,
)

CPU = torch.device("cpu")


def test_load_datasets_options_are_the_specs_fields_with_their_defaults():
    options = {
        name: parameter.default
        for name, parameter in inspect.signature(load_dataset).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "progress"
    }
    fields = {f.name: f.default for spec in (Decoding, Splitting) for f in dataclasses.fields(spec)}
    assert options == fields


def test_load_dataset_reads_as_the_pipelines_specs_do(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "ds", per_class=10)
    specs = read_dataset(
        root,
        Decoding(image_size=12, interpolation="bilinear"),
        Splitting(val_fraction=0.2, split="random", seed=3),
        progress=False,
    )
    named = load_dataset(
        root, image_size=12, interpolation="bilinear", val_fraction=0.2, split="random", seed=3, progress=False
    )
    assert specs.image_shape == (12, 12, 3) and specs.val.files == named.val.files
    assert specs.split_rule == named.split_rule
    assert np.array_equal(specs.train.images, named.train.images)


def test_each_function_refuses_the_other_shape_of_arguments():
    images, labels = np.zeros((2, 4, 4, 3), dtype=np.uint8), np.arange(2)
    with pytest.raises(TypeError, match="flip"):
        DeviceLoader(images, labels, 2, CPU, flip=True)
    with pytest.raises(TypeError, match="positional"):
        load_dataset("anywhere", Decoding(image_size=12))
    with pytest.raises(TypeError, match="val_fractoin"):
        load_dataset("anywhere", val_fractoin=0.1)


def test_a_loader_holds_the_rows_it_is_given_streamed_or_not():
    images = np.random.default_rng(1).integers(0, 256, (30, 6, 6, 3), dtype=np.uint8)
    rows = np.array([29, 3, 7, 11, 0, 5, 18, 22, 9, 14, 2, 27])
    labels = np.arange(len(rows))
    common = dict(augment=Augmentation(flip=True, translate=1), sampling=Sampling(shuffle=True, seed=2))
    copied = DeviceLoader(images[rows], labels, 4, CPU, **common)
    held = DeviceLoader(images, labels, 4, CPU, hold=Holding(rows), **common)
    streamed = DeviceLoader(images, labels, 4, CPU, hold=Holding(rows, stream=True), **common)
    assert streamed.stream and not held.stream and not copied.stream
    for epoch in (0, 1):
        batches = []
        for loader in (copied, held, streamed):
            loader.set_epoch(epoch)
            batches.append(list(loader))
        assert len(batches[0]) == 3
        for other in batches[1:]:
            assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches[0], other))
    assert not Augmentation() and Augmentation(cutout=2)
