"""A dataset on disk -> decoded uint8 images split into train / val / test."""
from __future__ import annotations

import math
import os
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from . import cifar
from .decode import image_size_of, load_images
from .folder import check_folder, check_same_classes, list_classes, scan_folder


@dataclass
class Split:
    """One subset: `images` uint8 (N, H, W, 3) as stored, `labels` int64 (N,), `files` for reference."""

    images: np.ndarray
    labels: np.ndarray
    files: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> "Split":
        return Split(self.images[index], self.labels[index], [self.files[i] for i in index])


@dataclass
class Dataset:
    classes: list[str]
    train: Split
    val: Split | None
    test: Split | None
    source: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def subsets(self) -> dict[str, Split]:
        named = {"training": self.train, "validation": self.val, "test": self.test}
        return {name: split for name, split in named.items() if split is not None}

    def found_lines(self) -> list[str]:
        """Keras's lines, one per subset: `Found 45000 images belonging to 10 classes.`"""
        return [f"Found {len(s)} images belonging to {len(self.classes)} classes." for s in self.subsets().values()]


def split_indices(labels: np.ndarray, fraction: float, mode: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices, stratified by class.

    keras: the first int(fraction * n_class) samples of each class, in stored (sorted) order, are the
    validation subset, as ImageDataGenerator(validation_split=...) does. random: a seeded random choice
    of int(fraction * n_class) samples of each class.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if mode == "random":
            members = rng.permutation(members)
        n_val = int(fraction * len(members))
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def classes_without_validation(labels: np.ndarray, classes: list[str], fraction: float) -> list[str]:
    """Names of the classes that `fraction` gives no validation image (int(fraction * n) == 0)."""
    if fraction <= 0:
        return []
    counts = Counter(labels.tolist())
    return [name for index, name in enumerate(classes) if int(fraction * counts[index]) == 0]


def even_subset(labels: np.ndarray, limit: int) -> np.ndarray:
    """Indices of at most `limit` samples spread evenly over classes, in stored order."""
    classes = np.unique(labels)
    per_class = max(1, limit // len(classes))
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in classes])
    return np.sort(keep)


def _common_size(root: str, files: list[str], skip_bad: bool = False) -> tuple[int, int]:
    # The size of the first (readable) image; images of another size are resized to it at decode.
    for name in files:
        try:
            return image_size_of(os.path.join(root, name))
        except DataError:
            if not skip_bad:
                raise
    raise DataError(f"{root}: no readable image")


def _folder_split(root: str, classes: list[str], size: tuple[int, int] | None, interpolation: str,
                  progress: bool, skip_bad: bool) -> tuple[Split, tuple[int, int]]:
    scan = scan_folder(root, classes)
    size = size or _common_size(root, scan.files, skip_bad)
    images, bad = load_images(root, scan.files, size, interpolation, progress, skip_bad=skip_bad)
    split = Split(images, np.asarray(scan.labels, dtype=np.int64), scan.files)
    if bad:
        for _, reason in bad:
            print(f"skipped: {reason}", file=sys.stderr)
        print(f"skipped {len(bad)} unreadable image(s) of {len(scan.files)} in {root}", file=sys.stderr)
        split = split.take(np.setdiff1d(np.arange(len(split)), [i for i, _ in bad]))
    return split, size


def load_dataset(path: str, val_fraction: float = 0.1, split: str = "keras", seed: int = 0,
                 image_size: int = 0, interpolation: str = "nearest", subset: int = 0,
                 progress: bool = True, skip_bad: bool = False, strict_val: bool = True) -> Dataset:
    """Read an image-folder dataset (root/train, root/test) or a class-folder root or cifar-10-batches-py.
    A class that `val_fraction` gives no validation image is an error, or with `strict_val=False` (to
    describe a dataset) simply has none."""
    check_folder(path)
    size = (image_size, image_size) if image_size else None
    nested = os.path.join(path, cifar.CIFAR10_DIRNAME)
    if cifar.is_cifar_folder(path) or cifar.is_cifar_folder(nested):
        folder = path if cifar.is_cifar_folder(path) else nested
        classes = cifar.read_classes(folder)
        parts = []
        for is_train in (True, False):
            images, labels, names = cifar.read_cifar_folder(folder, is_train)
            # Keras order: by class, then by file name.
            order = np.lexsort((np.asarray(names), labels))
            images, labels, names = images[order], labels[order], [names[i] for i in order]
            if size and size != images.shape[1:3]:
                raise DataError(f"{folder}: CIFAR batches are 32x32; set image_size to 0 and input_size "
                                f"to {size[0]} to resize on the device")
            parts.append(Split(np.ascontiguousarray(images), labels, names))
        full_train, test = parts
    else:
        train_root, test_root = os.path.join(path, "train"), os.path.join(path, "test")
        if os.path.isdir(train_root):
            classes = list_classes(train_root)
            test = None
            full_train, size = _folder_split(train_root, classes, size, interpolation, progress, skip_bad)
            if os.path.isdir(test_root):
                check_same_classes(classes, list_classes(test_root), train_root, test_root)
                test, _ = _folder_split(test_root, classes, size, interpolation, progress, skip_bad)
        else:
            classes = list_classes(path)
            full_train, size = _folder_split(path, classes, size, interpolation, progress, skip_bad)
            test = None
    short = classes_without_validation(full_train.labels, classes, val_fraction)
    if short and strict_val:
        raise DataError(f"{path}: val_fraction {val_fraction} leaves {len(short)} class(es) without validation "
                        f"images ({', '.join(short[:5])}{', ...' if len(short) > 5 else ''}: fewer than "
                        f"{math.ceil(1 / val_fraction)} images each); raise val_fraction, add images or set it to 0")
    if val_fraction > 0:
        train_idx, val_idx = split_indices(full_train.labels, val_fraction, split, seed)
        train, val = full_train.take(train_idx), full_train.take(val_idx)
    else:
        train, val = full_train, None
    if subset:
        train = train.take(even_subset(train.labels, subset))
        val = val.take(even_subset(val.labels, subset)) if val is not None else None
        test = test.take(even_subset(test.labels, subset)) if test is not None else None
    return Dataset(classes=classes, train=train, val=val, test=test, source=os.path.abspath(path))


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    flat = images.reshape(-1, images.shape[-1])
    sample = flat[:: max(1, len(flat) // 2_000_000)].astype(np.float64) / 255.0
    return sample.mean(0).tolist(), sample.std(0).tolist()
