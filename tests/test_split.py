"""Validation splits: Keras's (first files of each class) and a seeded stratified random one."""

import os

import numpy as np

from cnnlab.data import load_dataset, split_indices


def test_keras_split_on_shared_cifar10(cifar_root):
    ds = load_dataset(cifar_root, val_fraction=0.1, split="keras", progress=False)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (45000, 5000, 5000)
    assert ds.found_lines() == [f"Found {n} images belonging to 10 classes." for n in (45000, 5000, 5000)]
    for index, name in enumerate(ds.classes):
        first = sorted(os.listdir(os.path.join(cifar_root, "train", name)))[:500]
        val_files = [f for f, label in zip(ds.val.files, ds.val.labels) if label == index]
        assert val_files == [f"{name}/{f}" for f in first]
    assert not set(ds.train.files) & set(ds.val.files)


def test_keras_split_takes_int_of_fraction_per_class():
    labels = np.array([0] * 7 + [1] * 13)
    train, val = split_indices(labels, 0.25, "keras", seed=0)
    assert val.tolist() == [0, 7, 8, 9]  # int(0.25*7)=1 of class 0, int(0.25*13)=3 of class 1
    assert sorted(train.tolist() + val.tolist()) == list(range(20))


def test_random_split_is_stratified_seeded_and_disjoint():
    labels = np.repeat(np.arange(4), 50)
    train_a, val_a = split_indices(labels, 0.2, "random", seed=3)
    train_b, val_b = split_indices(labels, 0.2, "random", seed=3)
    _, val_c = split_indices(labels, 0.2, "random", seed=4)
    assert np.array_equal(val_a, val_b) and np.array_equal(train_a, train_b)
    assert not np.array_equal(val_a, val_c)
    assert np.bincount(labels[val_a]).tolist() == [10, 10, 10, 10]
    assert not set(train_a) & set(val_a) and len(train_a) + len(val_a) == 200
