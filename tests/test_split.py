"""Validation splits: Keras's (first files of each class) and a seeded stratified random one."""

import io
import json
import os
from collections import Counter

import numpy as np
import pytest
from conftest import make_dataset, make_folder
from PIL import Image

from cnnlab import preset, train_run
from cnnlab.cli import main
from cnnlab.config import Config
from cnnlab.data import Splitting, load_dataset, split_indices
from cnnlab.pipeline import load_data
from cnnlab.presets import PRESETS


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


# --- the default split is representative of the folder's file-name prefixes ---------------------------

PREFIXES = (("aardvark", 200), ("bison", 800), ("camel", 1000))  # per class; sorted, "aardvark" comes first


def prefixed_folder(root, classes=("a", "b")) -> str:
    """Class folders of 2,000 tiny PNGs named PREFIX_s_NNNNNN.png, as CIFAR-10's are (by the search term that
    found them): the keras rule's first 10% of each class is exactly its 200 `aardvark` images."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(buffer, "PNG")
    for name in classes:
        os.makedirs(os.path.join(root, name))
        number = 0
        for prefix, count in PREFIXES:
            for _ in range(count):
                number += 1
                with open(os.path.join(root, name, f"{prefix}_s_{number:06d}.png"), "wb") as fh:
                    fh.write(buffer.getvalue())
    return str(root)


def prefix_shares(split) -> dict[tuple[int, str], float]:
    """Per (class, prefix): the prefix's share of the class's images in `split`, in percentage points."""
    counts = Counter((int(label), os.path.basename(f).split("_s_")[0]) for f, label in zip(split.files, split.labels))
    per_class = Counter(int(label) for label in split.labels)
    return {(c, p): 100 * counts[c, p] / per_class[c] for c in per_class for p, _ in PREFIXES}


def test_the_default_split_holds_every_prefix_in_validation_as_in_training(tmp_path):
    root = prefixed_folder(tmp_path / "ds")
    ds = load_data(Config(data=root, progress=False))
    assert (len(ds.train), len(ds.val)) == (3600, 400)  # int(0.1 x 2000) of each class
    val, train = prefix_shares(ds.val), prefix_shares(ds.train)
    # 200 validation images a class: a prefix of share p differs by ~1.1 sqrt(p(1-p)/200), at most 3.9 points
    # (20 is 5 standard deviations); the keras rule differs by 100 (aardvark) and 40-50 (the others)
    assert max(abs(val[key] - train[key]) for key in val) < 20, (val, train)


def test_the_keras_split_is_kept_exactly(tmp_path):
    root = prefixed_folder(tmp_path / "ds")
    ds = load_data(Config(data=root, split="keras", progress=False))
    for index, name in enumerate(ds.classes):
        first = sorted(os.listdir(os.path.join(root, name)))[:200]
        assert [f for f, label in zip(ds.val.files, ds.val.labels) if label == index] == [f"{name}/{f}" for f in first]
    assert prefix_shares(ds.val)[0, "aardvark"] == 100 and prefix_shares(ds.train)[0, "aardvark"] == 0
    assert preset("seed").split == "keras" and PRESETS["seed"]["split"] == "keras"


def test_the_random_split_is_drawn_with_the_split_seed_not_the_training_seed(tmp_path):
    root = prefixed_folder(tmp_path / "ds")
    files = {
        (seed, split_seed): load_data(Config(data=root, seed=seed, split_seed=split_seed, progress=False)).val.files
        for seed, split_seed in ((0, 0), (5, 0), (0, 1))
    }
    assert files[0, 0] == files[5, 0]  # every training seed of a sweep is scored on the same images
    assert files[0, 0] != files[0, 1]


def test_a_subset_is_a_seeded_sample_of_every_prefix_and_the_first_files_under_keras(tmp_path):
    root = prefixed_folder(tmp_path / "ds")
    ds = load_data(Config(data=root, val_fraction=0, subset=800, progress=False))
    assert len(ds.train) == 800
    # 400 of each class's 2,000: aardvark 10%, bison 40%, camel 50% of them, each within ~2.5 points
    shares = prefix_shares(ds.train)
    assert all(abs(shares[c, p] - 100 * n / 2000) < 12 for c in (0, 1) for p, n in PREFIXES), shares
    again = load_data(Config(data=root, val_fraction=0, subset=800, seed=3, progress=False))
    assert again.train.files == ds.train.files  # drawn with split_seed, not the training seed
    keras = load_data(Config(data=root, val_fraction=0, subset=800, split="keras", progress=False))
    assert keras.train.files == [
        f"{n}/{f}" for n in ("a", "b") for f in sorted(os.listdir(os.path.join(root, n)))[:400]
    ]


def test_data_info_and_the_saved_run_name_the_rule_and_its_seed(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", 20)
    assert main(["data", "info", root, "--quiet", "--split-seed", "4"]) == 0
    assert (
        "validation split: 10% of each class, drawn at random (split random, split_seed 4)" in capsys.readouterr().out
    )
    assert main(["data", "info", root, "--quiet", "--split", "keras"]) == 0
    assert (
        "validation split: 10% of each class, the first files in sorted order (split keras)" in capsys.readouterr().out
    )
    run = str(tmp_path / "run")
    train_run(preset("fast", data=root, epochs=1, batch_size=8, threads=1, progress=False), run)
    saved = json.load(open(os.path.join(run, "config.json")))
    assert (saved["config"]["split"], saved["config"]["split_seed"]) == ("random", 0)
    assert saved["data"]["split"] == "validation split: 10% of each class, drawn at random (split random, split_seed 0)"


@pytest.mark.parametrize(
    "splitting",
    [
        Splitting(),
        Splitting(split="keras", val_fraction=0.3),
        Splitting(folds=3, fold=1, fold_seed=4),
        Splitting(subset=7),
    ],
)
def test_training_split_counts_are_those_of_the_loaded_training_split(tmp_path, splitting):
    from cnnlab.data.dataset import Decoding, read_dataset, training_split_counts

    root = make_folder(tmp_path / "ds", per_class=11, size=4)
    os.remove(os.path.join(root, "c", "img_010.png"))  # classes of 11, 11, 10
    loaded = read_dataset(root, Decoding(), splitting, progress=False).train.labels
    assert training_split_counts(np.array([11, 11, 10]), splitting).tolist() == np.bincount(loaded).tolist()
