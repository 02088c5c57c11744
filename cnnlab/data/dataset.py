"""A dataset on disk -> decoded uint8 images split into train / val / test."""
from __future__ import annotations

import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from . import cifar
from .decode import Decoding, MixedSizes, folder_digest, image_size_of, load_images
from .folder import check_folder, check_same_classes, list_classes, scan_folder


@dataclass
class Split:
    """One subset: rows `index` (all, in order, when None) of `stored`, uint8 (M, H, W, 3) as decoded,
    which is usually a read-only memory map of the decode cache shared by a folder's subsets (a split
    never copies it); `labels` int64 (N,) and `files` of the subset."""

    stored: np.ndarray
    labels: np.ndarray
    files: list[str]
    index: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self) -> np.ndarray:
        """The subset's rows of `stored`."""
        return np.arange(len(self.stored)) if self.index is None else self.index

    @property
    def images(self) -> np.ndarray:
        """The subset's images (a copy in memory when the subset is a selection: for small uses)."""
        return self.stored if self.index is None else self.stored[self.index]

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.stored.shape[1:]))

    def take(self, index: np.ndarray) -> "Split":
        return Split(self.stored, self.labels[index], [self.files[i] for i in index], self.rows()[index])


@dataclass
class Dataset:
    classes: list[str]
    train: Split
    val: Split | None
    test: Split | None
    source: str
    notes: list[str] = field(default_factory=list)  # what was decided about the images (sizes), to print

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.stored.shape[1:])  # type: ignore[return-value]

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


RESIZE_TEXT = {"crop": "shorter side scaled to fit, centre-cropped", "pad": "longer side scaled to fit, padded with black",
               "squash": "stretched to the size"}


def _first_size(root: str, files: list[str], exif: bool, skip_bad: bool = False) -> tuple[int, int]:
    # The size of the first (readable) image.
    for name in files:
        try:
            return image_size_of(os.path.join(root, name), exif)
        except DataError:
            if not skip_bad:
                raise
    raise DataError(f"{root}: no readable image")


def _hw(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@dataclass
class Budget:
    """Memory the decoded images may take (bytes); `images` still to decode, and the bytes taken so far."""

    limit: int
    what: str
    images: int = 0
    used: int = 0

    def take(self, root: str, n: int, size: tuple[int, int]) -> None:
        """Account for `n` images at `size`, refusing before anything is decoded when they and the images
        still to come (taken at the same size) would not fit."""
        per_image = size[0] * size[1] * 3
        projected = self.used + max(n, self.images) * per_image
        if projected > self.limit:
            count = self.used // per_image + max(n, self.images)
            side = int(math.sqrt(self.limit / (3 * count)))
            raise DataError(f"{root}: decoding {count} images at {_hw(size)} needs {projected / 1e9:.1f} GB, more "
                            f"than the {self.limit / 1e9:.1f} GB {self.what}; --image-size {max(1, side)} would fit")
        self.used += n * per_image
        self.images = max(0, self.images - n)


def _folder_split(scan, decide: dict, budget: Budget, progress: bool, skip_bad: bool, notes: list[str]
                  ) -> tuple[Split, Decoding]:
    """One scanned folder of class folders, decoded. `decide`: size (or None: decide here), fallback (the
    size when the images are larger or of several sizes), interpolation, resize, exif."""
    root = scan.root
    digest = folder_digest(root, scan.files)
    common = {k: decide[k] for k in ("interpolation", "resize", "exif")}
    if decide["size"]:
        how = Decoding(decide["size"], **common)
    else:
        first = _first_size(root, scan.files, decide["exif"], skip_bad)
        target = decide["fallback"] or first
        if first[0] * first[1] <= target[0] * target[1]:
            how = Decoding(first, **common, expect=first)  # taken as a folder of one size, checked at decode
        else:
            how = Decoding(target, **common)
            notes.append(f"{root}: images of {_hw(first)} (the first) and others, larger than the model's input: "
                         f"each decoded to {_hw(target)}, {RESIZE_TEXT[how.resize]} (--resize crop|pad|squash; "
                         "--image-size, --input-size HxW to choose)")
    budget.take(root, len(scan.files), how.size)
    try:
        images, bad = load_images(root, scan.files, how, progress, skip_bad=skip_bad, digest=digest)
    except MixedSizes as mixed:
        budget.used -= len(scan.files) * how.size[0] * how.size[1] * 3
        budget.images += len(scan.files)
        target = decide["fallback"] or how.size
        how = Decoding(target, **common)
        budget.take(root, len(scan.files), how.size)
        notes.append(f"{root}: images of several sizes ({_hw(mixed.size)} in {os.path.basename(mixed.path)}, "
                     f"{_hw(target) if target != mixed.size else 'others'} ...): each decoded to {_hw(target)}, "
                     f"{RESIZE_TEXT[how.resize]} (--resize crop|pad|squash; --image-size, --input-size HxW to choose)")
        images, bad = load_images(root, scan.files, how, progress, skip_bad=skip_bad, digest=digest)
    split = Split(images, np.asarray(scan.labels, dtype=np.int64), scan.files)
    if bad:
        for _, reason in bad:
            print(f"skipped: {reason}", file=sys.stderr)
        print(f"skipped {len(bad)} unreadable image(s) of {len(scan.files)} in {root}", file=sys.stderr)
        split = split.take(np.setdiff1d(np.arange(len(split)), [i for i, _ in bad]))
    return split, how


def load_dataset(path: str, val_fraction: float = 0.1, split: str = "keras", seed: int = 0,
                 image_size: int | tuple[int, int] | None = None, interpolation: str = "nearest", subset: int = 0,
                 progress: bool = True, skip_bad: bool = False, strict_val: bool = True, resize: str = "squash",
                 exif: bool = False, fallback_size: tuple[int, int] | None = None,
                 memory_budget: int | None = None) -> Dataset:
    """Read an image-folder dataset (root/train, root/test) or a class-folder root or cifar-10-batches-py.

    Images are decoded at `image_size` (a side or (height, width)); without it, at the folder's own size
    when all its images have one no larger than `fallback_size`, else at `fallback_size` (else the first
    image's size), `resize`d (crop, pad or squash) with `interpolation`, upright by EXIF with `exif`.
    `memory_budget`: bytes the decoded images may take (default 80% of the available memory); more is
    refused before decoding. A class that `val_fraction` gives no validation image is an error, or with
    `strict_val=False` (to describe a dataset) simply has none."""
    check_folder(path)
    size = (image_size, image_size) if isinstance(image_size, int) and image_size else (
        tuple(image_size) if image_size else None)
    from ..device import available_memory

    budget = Budget(memory_budget, "allowed (--memory-gb)") if memory_budget else Budget(
        int(0.8 * available_memory()), "available (80% of free memory; --memory-gb to change)")
    notes: list[str] = []
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
        decide = {"size": size, "fallback": tuple(fallback_size) if fallback_size else None,
                  "interpolation": interpolation, "resize": resize, "exif": exif}
        train_root, test_root = os.path.join(path, "train"), os.path.join(path, "test")
        if os.path.isdir(train_root):
            classes = list_classes(train_root)
            scans = [scan_folder(train_root, classes)]
            if os.path.isdir(test_root):
                check_same_classes(classes, list_classes(test_root), train_root, test_root)
                scans.append(scan_folder(test_root, classes))
        else:
            classes = list_classes(path)
            scans = [scan_folder(path, classes)]
        budget.images = sum(len(scan.files) for scan in scans)  # all of them, before any is decoded
        full_train, how = _folder_split(scans[0], decide, budget, progress, skip_bad, notes)
        test = None
        if len(scans) > 1:
            test, _ = _folder_split(scans[1], {**decide, "size": how.size}, budget, progress, skip_bad, notes)
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
    return Dataset(classes=classes, train=train, val=val, test=test, source=os.path.abspath(path), notes=notes)


def channel_stats(images: np.ndarray | Split) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (an array or a Split), in [0, 1] units, from at most about
    2 million pixels: whole images, evenly spaced, so a memory-mapped split is read only in part."""
    if isinstance(images, Split):
        rows = images.rows()
        pixels = int(np.prod(images.stored.shape[1:3]))
        images = images.stored[np.sort(rows[:: max(1, len(rows) * pixels // 2_000_000)])]
    flat = images.reshape(-1, images.shape[-1])
    sample = flat[:: max(1, len(flat) // 2_000_000)].astype(np.float64) / 255.0
    return sample.mean(0).tolist(), sample.std(0).tolist()
