"""A dataset on disk -> decoded uint8 images split into train / val / test."""

from __future__ import annotations

import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError
from . import cifar, decode
from .decode import DecodePlan, folder_digest, image_size_of, load_images, size_survey
from .folder import FolderScan, check_folder, check_same_classes, list_classes, scan_folder


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

    def take(self, index: np.ndarray) -> Split:
        return Split(self.stored, self.labels[index], [self.files[i] for i in index], self.rows()[index])


@dataclass
class Dataset:
    classes: list[str]
    train: Split
    val: Split | None
    test: Split | None
    source: str
    notes: list[str] = field(default_factory=list)  # what was decided about the images (sizes), to print
    split_rule: str = ""  # which rule (and seed) chose the validation split and the subset: Splitting.describe()
    # what skip_bad left out of each folder ("train": the training folder or the dataset's one folder,
    # "test"): [{path, reason}], folders with nothing skipped absent
    skipped: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.stored.shape[1:])  # type: ignore[return-value]

    def subsets(self) -> dict[str, Split]:
        named = {"training": self.train, "validation": self.val, "test": self.test}
        return {name: split for name, split in named.items() if split is not None}

    def found_lines(self) -> list[str]:
        """Keras's lines, one per subset: `Found 45000 images belonging to 10 classes.`"""
        return [f"Found {len(s)} images belonging to {len(self.classes)} classes." for s in self.subsets().values()]

    def named_found_lines(self) -> list[str]:
        """Keras's lines, each with its subset's name, as the commands print them (with --subset all three
        can give one count): `Found 45000 images belonging to 10 classes.  (training)`."""
        return [f"{line}  ({name})" for line, name in zip(self.found_lines(), self.subsets())]


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


def fold_of(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each sample: stratified and seeded. Each class's samples, in a seeded
    order, are dealt to the folds in turn, starting where the previous class stopped, so every class is
    split as evenly as possible (fold sizes within a class differ by at most one) and so are the folds."""
    rng = np.random.default_rng(seed)
    assigned = np.empty(len(labels), dtype=np.int64)
    start = 0
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        assigned[members] = (start + np.arange(len(members))) % folds
        start = (start + len(members)) % folds
    return assigned


def fold_indices(labels: np.ndarray, folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of k-fold cross-validation: fold `fold` of fold_of(...) held out."""
    held_out = fold_of(labels, folds, seed) == fold
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def classes_below(labels: np.ndarray, classes: list[str], count: int) -> list[tuple[str, int]]:
    """(name, images) of the classes with fewer than `count` images."""
    counts = Counter(labels.tolist())
    return [(name, counts[index]) for index, name in enumerate(classes) if counts[index] < count]


def classes_without_validation(labels: np.ndarray, classes: list[str], fraction: float) -> list[str]:
    """Names of the classes that `fraction` gives no validation image (int(fraction * n) == 0)."""
    if fraction <= 0:
        return []
    counts = Counter(labels.tolist())
    return [name for index, name in enumerate(classes) if int(fraction * counts[index]) == 0]


def even_subset(labels: np.ndarray, limit: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices of at most `limit` samples spread evenly over classes: the first of each class in stored
    (sorted) order, or with `rng` a random choice of each class."""
    per_class = max(1, limit // len(np.unique(labels)))
    keep = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        keep.append(members[:per_class] if rng is None else rng.permutation(members)[:per_class])
    return np.sort(np.concatenate(keep))


RESIZE_TEXT = {
    "crop": "shorter side scaled to fit, centre-cropped",
    "pad": "longer side scaled to fit, padded with black",
    "squash": "stretched to the size",
}
SIZE_FLAGS = "(--resize crop|pad|squash; --image-size, --input-size HxW to choose)"


@dataclass(frozen=True)
class Decoding:
    """How a folder's files become stored images. `image_size` (a side or (height, width)): the size to
    decode at; without it, the folder's own size when all its images have one no larger than
    `fallback_size`, else `fallback_size` (else the first image's size). `resize` (crop | pad | squash)
    with `interpolation` (nearest | bilinear), upright by EXIF with `exif`. `skip_bad`: leave out the
    files that cannot be decoded (the first named on stderr, all in Dataset.skipped) instead of stopping. `memory_budget`: the bytes the
    decoded images may take (default 80% of the available memory); more is refused before decoding."""

    image_size: int | tuple[int, int] | None = None
    interpolation: str = "nearest"
    resize: str = "squash"
    exif: bool = False
    fallback_size: tuple[int, int] | None = None
    skip_bad: bool = False
    memory_budget: int | None = None

    @property
    def size(self) -> tuple[int, int] | None:
        """`image_size` as (height, width), or None."""
        if not self.image_size:
            return None
        return (self.image_size,) * 2 if isinstance(self.image_size, int) else tuple(self.image_size)

    def plan(self, size: tuple[int, int]) -> DecodePlan:
        return DecodePlan(tuple(size), self.interpolation, self.resize, self.exif)


@dataclass(frozen=True)
class Splitting:
    """How the training images are split: `val_fraction` of each class for validation, by `split` (random:
    stratified, drawn with `seed`, the split's own seed, never the training seed: the default, as Config's;
    keras: the first files in sorted order, Keras's flow_from_directory rule); `subset`: keep at most that many images of each subset,
    spread evenly over classes, chosen by the same rule (the first files, or drawn with `seed`). A class
    that `val_fraction` gives no validation image is an error, or with `strict_val=False` (to describe a
    dataset) simply has none. With `folds` (k-fold cross-validation) val_fraction is ignored: the
    validation split is fold `fold` of fold_of(labels, folds, fold_seed), and a class with fewer than
    `folds` images is an error."""

    val_fraction: float = 0.1
    split: str = "random"
    seed: int = 0  # of the random split and the random subset (config key split_seed)
    subset: int = 0
    strict_val: bool = True
    folds: int = 0  # k-fold: fold `fold` of `folds` (drawn with fold_seed) is the validation split
    fold: int = 0
    fold_seed: int = 0

    @classmethod
    def of(cls, cfg: Any) -> Splitting:
        """The splitting a Config's keys (val_fraction, split, split_seed, subset, folds, fold, fold_seed) say."""
        return cls(
            val_fraction=cfg.val_fraction,
            split=cfg.split,
            seed=cfg.split_seed,
            subset=cfg.subset,
            folds=cfg.folds,
            fold=cfg.fold,
            fold_seed=cfg.fold_seed,
        )

    def describe(self) -> str:
        """Which rule, and which seed, chose the validation split (and the subset): a line to print and save."""
        if self.split == "random":
            rule = f"drawn at random (split random, split_seed {self.seed})"
        else:
            rule = "the first files in sorted order (split keras)"
        if self.folds:
            text = f"validation split: fold {self.fold} of {self.folds}, stratified (fold_seed {self.fold_seed})"
        elif self.val_fraction > 0:
            text = f"validation split: {100 * self.val_fraction:g}% of each class, {rule}"
        else:
            text = "validation split: none (val_fraction 0)"
        if self.subset:
            text += f"; subset: at most {self.subset} images of each split, evenly over classes, {rule}"
        return text


@dataclass(frozen=True)
class Source:
    """A scanned folder of class folders and the digest of its files (the decode cache's key)."""

    scan: FolderScan
    digest: str


def load_dataset(
    path: str,
    *,
    image_size: int | tuple[int, int] | None = None,
    interpolation: str = "nearest",
    resize: str = "squash",
    exif: bool = False,
    fallback_size: tuple[int, int] | None = None,
    skip_bad: bool = False,
    memory_budget: int | None = None,
    val_fraction: float = 0.1,
    split: str = "random",
    seed: int = 0,
    subset: int = 0,
    strict_val: bool = True,
    folds: int = 0,
    fold: int = 0,
    fold_seed: int = 0,
    progress: bool = True,
) -> Dataset:
    """Read an image-folder dataset (root/train, root/test) or a class-folder root or cifar-10-batches-py,
    in one pass: scan the folders, decide the stored size and check the memory, decode into the cache,
    split. The options are the fields of `Decoding` (image_size ... memory_budget: how files become
    stored images) and `Splitting` (val_fraction ... fold_seed: the validation split), with their
    defaults: load_dataset(path, val_fraction=0, image_size=32)."""
    decoding = Decoding(
        image_size=image_size,
        interpolation=interpolation,
        resize=resize,
        exif=exif,
        fallback_size=fallback_size,
        skip_bad=skip_bad,
        memory_budget=memory_budget,
    )
    splitting = Splitting(
        val_fraction=val_fraction,
        split=split,
        seed=seed,
        subset=subset,
        strict_val=strict_val,
        folds=folds,
        fold=fold,
        fold_seed=fold_seed,
    )
    return read_dataset(path, decoding, splitting, progress)


def read_dataset(path: str, decoding: Decoding, splitting: Splitting, progress: bool = True) -> Dataset:
    """load_dataset with its options as the two specs (as the pipeline builds them from a Config)."""
    check_folder(path)
    folder = cifar_folder(path)
    skipped: dict[str, list[dict]] = {}
    if folder:
        (classes, parts), notes = read_cifar(folder, decoding.size), []
    else:
        classes, sources = scan_sources(path)
        plan, notes = decide(sources, decoding, progress)
        parts = []
        for name, source in zip(("train", "test"), sources):
            split, left_out = decode_source(source, plan, decoding.skip_bad, progress)
            parts.append(split)
            if left_out:
                skipped[name] = left_out
    dataset = split_dataset(path, classes, parts, splitting, notes)
    dataset.skipped = skipped
    dataset.split_rule = splitting.describe()
    return dataset


def cifar_folder(path: str) -> str | None:
    """The cifar-10-batches-py folder `path` is or holds, else None."""
    nested = os.path.join(path, cifar.CIFAR10_DIRNAME)
    return next((folder for folder in (path, nested) if cifar.is_cifar_folder(folder)), None)


def read_cifar(folder: str, size: tuple[int, int] | None) -> tuple[list[str], list[Split]]:
    """The classes and the (training, test) splits of a CIFAR-10 batches folder, each in Keras order."""
    if size and size != (32, 32):
        raise DataError(
            f"{folder}: CIFAR batches are 32x32; set image_size to 0 and input_size "
            f"to {size[0]} to resize on the device"
        )
    parts = []
    for is_train in (True, False):
        images, labels, names = cifar.read_cifar_folder(folder, is_train)
        order = np.lexsort((np.asarray(names), labels))  # Keras order: by class, then by file name
        parts.append(Split(np.ascontiguousarray(images[order]), labels[order], [names[i] for i in order]))
    return cifar.read_classes(folder), parts


def scan_sources(path: str) -> tuple[list[str], list[Source]]:
    """The classes and the folders to decode: root/train (and root/test, with the same classes), or the
    root itself as one folder of class folders."""
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
    return classes, [Source(scan, folder_digest(scan.root, scan.files)) for scan in scans]


def decide(sources: list[Source], decoding: Decoding, progress: bool = True) -> tuple[DecodePlan, list[str]]:
    """How every folder is decoded (at the size chosen for the first, the training images), checked
    against the memory budget before anything is decoded; and a note when the size was chosen for the
    user (to print)."""
    size, note = (decoding.size, None) if decoding.size else choose_size(sources[0], decoding, progress)
    plan = decoding.plan(size)
    check_room(sources, plan, decoding.memory_budget)
    return plan, [note] if note else []


def choose_size(source: Source, decoding: Decoding, progress: bool = True) -> tuple[tuple[int, int], str | None]:
    """The stored size of a folder without --image-size: its images' own size when they all have the
    first one's and it is no larger than the fallback; else the fallback, with a note saying so. A
    function of the folder's files alone (whatever decodes the cache holds); their sizes are read once
    per version of the folder (decode.size_survey)."""
    root, files = source.scan.root, source.scan.files
    first = _first_size(root, files, decoding.exif, decoding.skip_bad)
    target = tuple(decoding.fallback_size) if decoding.fallback_size else first
    resized = f"each decoded to {_hw(target)}, {RESIZE_TEXT[decoding.resize]} {SIZE_FLAGS}"
    if first[0] * first[1] > target[0] * target[1]:
        return target, (
            f"{root}: images of {_hw(first)} (the first) and others, larger than the model's input: {resized}"
        )
    other = size_survey(root, files, source.digest, decoding.exif, progress)
    if other is None:
        return first, None
    index, size = other
    return target, (
        f"{root}: images of several sizes ({_hw(size)} in {os.path.basename(files[index])}, "
        f"{_hw(target) if target != size else 'others'} ...): {resized}"
    )


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


def check_room(sources: list[Source], plan: DecodePlan, memory_budget: int | None) -> None:
    """Refuse, before anything is decoded, images that would not fit, naming a size that would: the
    decode goes into a file of the cache, which training reads (in place, or a batch at a time when
    large), so the room is the free space of the cache's disk, or `memory_budget` (bytes, --memory-gb)
    when set. Folders already in the cache need none."""
    if memory_budget:
        limit, what = memory_budget, "allowed (--memory-gb)"
    else:
        limit = decode.cache_room()
        what = f"free for the decode cache ({decode.cache_dir()}; CNNLAB_CACHE to move it, --memory-gb to cap it)"
    new = [s for s in sources if memory_budget or not os.path.exists(decode.cache_path(s.digest, plan))]
    count = sum(len(source.scan.files) for source in new)
    needed = count * plan.size[0] * plan.size[1] * 3
    if needed > limit:
        side = int(math.sqrt(limit / (3 * count)))
        raise DataError(
            f"{sources[0].scan.root}: decoding {count} images at {_hw(plan.size)} needs {needed / 1e9:.1f} GB, "
            f"more than the {limit / 1e9:.1f} GB {what}; --image-size {max(1, side)} would fit"
        )


SKIPPED_PRINTED = 10  # the skipped files named on stderr; the run's skipped.json lists them all


def decode_source(source: Source, plan: DecodePlan, skip_bad: bool, progress: bool = True) -> tuple[Split, list[dict]]:
    """A scanned folder decoded as `plan` says (from the cache, or into it), and with `skip_bad` the files
    that cannot be decoded, left out ([{path, reason}], the first named on stderr with their count). A
    class left with no image is an error."""
    scan = source.scan
    images, bad = load_images(scan.root, scan.files, plan, source.digest, progress, skip_bad=skip_bad)
    split = Split(images, np.asarray(scan.labels, dtype=np.int64), scan.files)
    if not bad:
        return split, []
    left_out = []
    for index, message in bad:
        path = os.path.join(scan.root, scan.files[index])
        left_out.append({"path": path, "reason": message.removeprefix(f"{path}: ")})
    for entry in left_out[:SKIPPED_PRINTED]:
        print(f"skipped: {entry['path']}: {entry['reason']}", file=sys.stderr)
    more = f" ({len(bad) - SKIPPED_PRINTED} more not shown)" if len(bad) > SKIPPED_PRINTED else ""
    print(f"skipped {len(bad)} unreadable image(s) of {len(scan.files)} in {scan.root}{more}", file=sys.stderr)
    split = split.take(np.setdiff1d(np.arange(len(split)), [i for i, _ in bad]))
    counts = np.bincount(split.labels, minlength=len(scan.classes))
    empty = [name for name, count in zip(scan.classes, counts) if count == 0]
    if empty:
        lost = sum(1 for i, _ in bad if scan.labels[i] == scan.classes.index(empty[0]))
        raise DataError(
            f"{os.path.join(scan.root, empty[0])}: class {empty[0]!r} has no readable image ({lost} "
            f"skipped{f'; {len(empty) - 1} more such class(es)' if len(empty) > 1 else ''}); "
            "replace the files or remove the class folder"
        )
    return split, left_out


def split_dataset(path: str, classes: list[str], parts: list[Split], splitting: Splitting, notes: list[str]) -> Dataset:
    """The Dataset of the decoded folders `parts` (training, and test if any): validation images taken
    from the training ones, then each subset cut to `subset`."""
    full_train, test = parts[0], (parts[1] if len(parts) > 1 else None)
    if splitting.folds:
        train, val = split_fold(path, classes, full_train, splitting)
        return _cut(path, classes, (train, val, test), splitting, notes)
    fraction = splitting.val_fraction
    short = classes_without_validation(full_train.labels, classes, fraction)
    if short and splitting.strict_val:
        raise DataError(
            f"{path}: val_fraction {fraction} leaves {len(short)} class(es) without validation "
            f"images ({', '.join(short[:5])}{', ...' if len(short) > 5 else ''}: fewer than "
            f"{math.ceil(1 / fraction)} images each); raise val_fraction, add images or set it to 0"
        )
    train, val = full_train, None
    if fraction > 0:
        train_idx, val_idx = split_indices(full_train.labels, fraction, splitting.split, splitting.seed)
        train, val = full_train.take(train_idx), full_train.take(val_idx)
    return _cut(path, classes, (train, val, test), splitting, notes)


def split_fold(path: str, classes: list[str], full_train: Split, splitting: Splitting) -> tuple[Split, Split]:
    """(train, val) of fold `splitting.fold` of `splitting.folds`; refused where a class has too few images."""
    few = classes_below(full_train.labels, classes, splitting.folds)
    if few:
        name, count = few[0]
        raise DataError(
            f"{path}: class {name!r} has {count} training image(s), fewer than the {splitting.folds} "
            "folds; use fewer folds or add images"
        )
    train_idx, val_idx = fold_indices(full_train.labels, splitting.folds, splitting.fold, splitting.fold_seed)
    return full_train.take(train_idx), full_train.take(val_idx)


def _cut(path: str, classes: list[str], parts: tuple, splitting: Splitting, notes: list[str]) -> Dataset:
    """The Dataset of (train, val, test), each cut to at most `splitting.subset` images when that is set,
    by the split's rule."""
    train, val, test = parts
    if splitting.subset:
        # each part its own generator, so that the test images kept do not depend on the validation split
        rngs = [np.random.default_rng([splitting.seed, k]) if splitting.split == "random" else None for k in range(3)]
        train, val, test = (
            None if part is None else part.take(even_subset(part.labels, splitting.subset, rng))
            for part, rng in zip((train, val, test), rngs)
        )
    return Dataset(classes=classes, train=train, val=val, test=test, source=os.path.abspath(path), notes=notes)


def training_split_counts(counts: np.ndarray, splitting: Splitting) -> np.ndarray:
    """Images per class of the training split that `splitting` leaves of a training folder of `counts`
    images per class, as split_dataset draws it (only class sizes decide them): without the validation
    images or the held-out fold, cut to `subset`."""
    labels = np.repeat(np.arange(len(counts)), counts)
    if splitting.folds:
        train = fold_indices(labels, splitting.folds, splitting.fold, splitting.fold_seed)[0]
    elif splitting.val_fraction > 0:
        train = split_indices(labels, splitting.val_fraction, splitting.split, splitting.seed)[0]
    else:
        train = np.arange(len(labels))
    labels = labels[train]
    if splitting.subset:
        labels = labels[even_subset(labels, splitting.subset)]
    return np.bincount(labels, minlength=len(counts))


def training_counts(path: str) -> tuple[list[str], np.ndarray]:
    """The classes of a dataset and the number of training images of each, from a scan of its folders
    (no decoding; unreadable files, which --skip-bad-images would leave out, are counted)."""
    check_folder(path)
    folder = cifar_folder(path)
    if folder:
        classes, labels = cifar.read_classes(folder), cifar.read_cifar_folder(folder, True)[1]
    else:
        train_root = os.path.join(path, "train")
        root = train_root if os.path.isdir(train_root) else path
        classes = list_classes(root)
        labels = np.asarray(scan_folder(root, classes).labels, dtype=np.int64)
    return classes, np.bincount(labels, minlength=len(classes))


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
