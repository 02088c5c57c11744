"""`cnnlab data check`: what is wrong with an image folder, found without training.

The folder is read with training's rules (cnnlab.data.folder); the validation split is the one training
carves from the readable training images (cnnlab.data.split_indices, same fraction, rule and split seed).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..adaptation import IMBALANCE_DEFAULT, IMBALANCE_RATIO, imbalance_ratio
from ..data.folder import check_folder, list_class_files, list_classes
from ..errors import CnnlabError
from .inspect import FileRecord, inspect_files
from .labels import LabelIssue, label_issues, training_source_warnings
from .pairs import exact_groups, near_pairs

SPLITS = ("train", "val", "test")
DEFAULT_THRESHOLD = 4  # phash Hamming distance for a near-duplicate (docs/data_check.md: how it was chosen)
DEFAULT_SIMILARITY = 0.7  # detail correlation of a near-duplicate found through features (docs/data_check.md)
EXTREME_ASPECT = 4.0  # longer side / shorter side above this is flagged
MIN_SIZE_CAP = 32  # --min-size default: half the median shorter side, at most this (px)
MAX_NEAR_PAIRS = 100_000  # near pairs kept per two splits (the closest): bounds memory on folders of video frames


@dataclass
class CheckOptions:
    threshold: int = DEFAULT_THRESHOLD  # near-duplicate: phash Hamming distance at most this (of 64 bits)
    min_size: int = 0  # px; a shorter side below it is flagged (0: adapt to the images)
    val_fraction: float = 0.1  # training's validation split, reproduced: fraction, rule, split seed
    split: str = "random"
    seed: int = 0  # training's split_seed
    workers: int = 0  # processes (0: one per core)
    progress: bool = True
    label_run: str | None = None  # a finished run, for suspected label errors on the test split
    features_run: str | None = None  # a finished run whose penultimate features pair near-duplicates too
    similarity: float = DEFAULT_SIMILARITY  # with features_run: detail correlation at least this

    def split_rule(self) -> str:
        """The validation split checked, as training describes its own."""
        from ..data.dataset import Splitting

        return Splitting(val_fraction=self.val_fraction, split=self.split, seed=self.seed).describe()


@dataclass
class Item:
    """One file: `path` relative to the checked folder (as shown), its split and class folder."""

    path: str
    split: str
    label: str
    record: FileRecord = field(default_factory=FileRecord)


@dataclass(frozen=True)
class Pair:
    """Two files (item indices, `a` in the earlier split) whose pixels are equal (`exact`), whose perceptual
    hashes are at most the threshold apart, or (with --features) found through the run's features with a
    detail correlation `similarity` at least its threshold; `distance` is their hashes' Hamming distance in
    every case."""

    a: int
    b: int
    distance: int
    exact: bool
    similarity: float | None = None  # detail correlation (check/features.py), where --features compared them


@dataclass(frozen=True)
class Problem:
    item: int
    kind: str  # empty, truncated, unreadable, small, aspect, blank
    detail: str


@dataclass
class CheckResult:
    root: str
    layout: str
    options: CheckOptions
    min_size: int
    classes: dict[str, list[str]]  # class folders of each folder (train, test)
    items: list[Item]
    pairs: list[Pair]
    problems: list[Problem]
    warnings: list[str]
    label_issues: list[LabelIssue] | None = None

    def cross_pairs(self) -> list[Pair]:
        return [p for p in self.pairs if self.items[p.a].split != self.items[p.b].split]

    @property
    def leaks(self) -> bool:
        return bool(self.cross_pairs())


def scan_items(path: str) -> tuple[str, dict[str, list[str]], list[Item], list[str]]:
    """(layout, class folders per folder, the files as items in Keras order, warnings) of `path`:
    PATH/train/<class> (+ PATH/test/<class>) or PATH/<class>."""
    check_folder(path)
    train_root, test_root = os.path.join(path, "train"), os.path.join(path, "test")
    if os.path.isdir(train_root):
        folders = [("train", train_root)] + ([("test", test_root)] if os.path.isdir(test_root) else [])
        layout = "train/ and test/" if len(folders) == 2 else "train/ only"
    else:
        folders, layout = [("train", path)], "class folders"
    classes, items, warnings = {}, [], []
    prefix = len(os.path.join(path, ""))
    for split, root in folders:
        classes[split] = list_classes(root)
        for name in classes[split]:
            files = list_class_files(os.path.join(root, name))
            if not files:
                warnings.append(f"{os.path.join(root, name)}: class folder holds no images (training stops on it)")
            items.extend(Item(full[prefix:], split, name) for full in files)
    if len(classes) == 2 and classes["train"] != classes["test"]:
        only_train = sorted(set(classes["train"]) - set(classes["test"]))
        only_test = sorted(set(classes["test"]) - set(classes["train"]))
        warnings.append(
            f"class folders of train/ and test/ differ (only in train: {', '.join(only_train) or '-'}; "
            f"only in test: {', '.join(only_test) or '-'}); training stops on it"
        )
    return layout, classes, items, warnings


def carve_validation(items: list[Item], classes: list[str], fraction: float, mode: str, seed: int) -> None:
    """Move to `val` the readable training images that training's split would hold out."""
    from ..data import split_indices

    if fraction <= 0:
        return
    train = [k for k, item in enumerate(items) if item.split == "train" and item.record.problem is None]
    if not train:
        return
    labels = np.array([classes.index(items[k].label) for k in train], dtype=np.int64)
    _, val = split_indices(labels, fraction, mode, seed)
    for index in val:
        items[train[index]].split = "val"


def find_pairs(items: list[Item], threshold: int, limit: int = MAX_NEAR_PAIRS) -> tuple[list[Pair], list[str]]:
    """(pairs, notes): exact duplicates (equal pixel digests) and near-duplicates (phash within
    `threshold`, blank images left out) within and across splits, each pair once, the earlier split
    first; of each two splits at most `limit` near pairs, the closest (a note says when more were found)."""
    order = {name: n for n, name in enumerate(SPLITS)}
    readable = [k for k, item in enumerate(items) if item.record.problem is None]
    pairs, notes = [], []
    for group in exact_groups([items[k].record.digest for k in readable]):
        members = sorted((readable[g] for g in group), key=lambda k: (order[items[k].split], k))
        pairs.extend(Pair(members[0], k, 0, True) for k in members[1:])
    ids: dict[str, int] = {}
    digest_id = np.array([ids.setdefault(item.record.digest, len(ids)) for item in items], dtype=np.int64)
    by_split = {
        s: np.array([k for k in readable if items[k].split == s and not items[k].record.blank], dtype=np.int64)
        for s in SPLITS
    }
    hashes = {s: np.array([items[k].record.phash for k in ks], dtype=np.uint64) for s, ks in by_split.items()}
    present = [s for s in SPLITS if len(by_split[s])]
    for first, second in itertools.combinations_with_replacement(present, 2):
        found = near_pairs(hashes[first], hashes[second], threshold, same=first == second, limit=limit)
        a, b = by_split[first][found.i], by_split[second][found.j]
        keep = digest_id[a] != digest_id[b]  # equal pixels: already an exact pair
        pairs.extend(
            Pair(x, y, d, False) for x, y, d in zip(a[keep].tolist(), b[keep].tolist(), found.distance[keep].tolist())
        )
        if found.total > len(found):
            notes.append(
                f"{found.total} near-duplicate pairs {first}-{second}: the {len(found)} closest kept "
                "(lower --threshold to see all)"
            )
    return sorted(pairs, key=lambda p: (p.distance, not p.exact, p.a, p.b)), notes


def add_feature_pairs(root: str, items: list[Item], pairs: list[Pair], options: CheckOptions) -> list[Pair]:
    """The hash pairs, each with its detail correlation, then the pairs found through the run's features
    alone (check/features.py: candidates by features and detail, confirmed by a detail correlation >=
    options.similarity; blank images left out), most similar first, at most MAX_NEAR_PAIRS of each two splits."""
    from .features import Embedding, detail_correlation, embed, matched_pairs

    order = {name: n for n, name in enumerate(SPLITS)}
    shown = [k for k, item in enumerate(items) if item.record.problem is None and not item.record.blank]
    embedded = embed(options.features_run, [os.path.join(root, items[k].path) for k in shown], options.progress)
    row = {k: n for n, k in enumerate(shown)}
    hashed = [p for p in pairs if p.a in row and p.b in row]
    scores = detail_correlation(
        embedded.detail[[row[p.a] for p in hashed]], embedded.detail[[row[p.b] for p in hashed]]
    )
    score = {(p.a, p.b): float(s) for p, s in zip(hashed, scores)}
    found = [dataclasses.replace(p, similarity=score.get((p.a, p.b))) for p in pairs]
    known = {(p.a, p.b) for p in pairs}
    by_split = {s: np.array([k for k in shown if items[k].split == s], dtype=np.int64) for s in SPLITS}
    present = [s for s in SPLITS if len(by_split[s])]
    extra = []
    for first, second in itertools.combinations_with_replacement(present, 2):
        rows_a, rows_b = [row[k] for k in by_split[first]], [row[k] for k in by_split[second]]
        part_a = Embedding(embedded.features[rows_a], embedded.detail[rows_a])
        part_b = Embedding(embedded.features[rows_b], embedded.detail[rows_b])
        shown_as = f"comparing {first}/{second}" if options.progress else ""
        hits = matched_pairs(part_a, part_b, options.similarity, first == second, MAX_NEAR_PAIRS, shown_as)
        for i, j, s in zip(by_split[first][hits.i].tolist(), by_split[second][hits.j].tolist(), hits.similarity):
            a, b = sorted((i, j), key=lambda k: (order[items[k].split], k))
            if (a, b) not in known:
                distance = (items[a].record.phash ^ items[b].record.phash).bit_count()  # the hashes' Hamming distance
                extra.append(Pair(a, b, distance, False, float(s)))
    return found + sorted(extra, key=lambda p: (-p.similarity, p.a, p.b))


def adaptive_min_size(items: list[Item]) -> int:
    """Half the median shorter side, at most MIN_SIZE_CAP: 32 px for photos, 16 px for CIFAR's 32x32."""
    sides = [min(i.record.width, i.record.height) for i in items if i.record.problem is None]
    return max(1, min(MIN_SIZE_CAP, int(np.median(sides)) // 2)) if sides else MIN_SIZE_CAP


def find_problems(items: list[Item], min_size: int) -> list[Problem]:
    problems = []
    for k, item in enumerate(items):
        r = item.record
        if r.problem:
            problems.append(Problem(k, r.problem, r.detail))
            continue
        if min(r.width, r.height) < min_size:
            problems.append(Problem(k, "small", f"{r.width}x{r.height}, shorter side under {min_size} px"))
        if max(r.width, r.height) > EXTREME_ASPECT * min(r.width, r.height):
            problems.append(Problem(k, "aspect", f"{r.width}x{r.height}, more than {EXTREME_ASPECT:g}:1"))
        if r.blank:
            problems.append(Problem(k, "blank", "one flat colour"))
    return problems


def class_counts(items: list[Item], classes: list[str], splits: tuple[str, ...]) -> dict[str, int]:
    counts = Counter(item.label for item in items if item.split in splits)
    return {name: counts.get(name, 0) for name in classes}


@dataclass(frozen=True)
class Leak:
    """Duplicates across two splits: pairs, and the images of the later split that have one (exact ones)."""

    first: str
    second: str
    pairs: int
    images: int
    exact_images: int


def leakage(result: CheckResult) -> list[Leak]:
    present = [s for s in SPLITS if any(item.split == s for item in result.items)]
    leaks = []
    for first, second in itertools.combinations(present, 2):
        found = [p for p in result.pairs if (result.items[p.a].split, result.items[p.b].split) == (first, second)]
        leaks.append(Leak(first, second, len(found), len({p.b for p in found}), len({p.b for p in found if p.exact})))
    return leaks


def folder_counts(result: CheckResult) -> dict[str, dict[str, int]]:
    """Images per class of each folder: train/ (training and validation together) and test/."""
    folders = {"train": ("train", "val"), "test": ("test",)}
    return {name: class_counts(result.items, classes, folders[name]) for name, classes in result.classes.items()}


def summary_warnings(result: CheckResult) -> list[str]:
    warnings = []
    bad = Counter(p.kind for p in result.problems if p.kind in ("empty", "truncated", "unreadable"))
    if bad:
        kinds = ", ".join(f"{n} {kind}" for kind, n in bad.items())
        warnings.append(
            f"{sum(bad.values())} file(s) cannot be read ({kinds}): training stops on them unless --skip-bad-images"
        )
    for leak in leakage(result):
        if leak.pairs:
            warnings.append(
                f"leakage: {leak.images} {leak.second} image(s) have a duplicate in {leak.first} "
                f"({leak.exact_images} exact; {leak.pairs} pair(s))"
            )
    return warnings + imbalance_warnings(result)


def imbalance_warnings(result: CheckResult) -> list[str]:
    """A warning for the training split (the counts `cnnlab train` adapts to) and for test/ where the largest
    class over the smallest is above adaptation.IMBALANCE_RATIO, training's own threshold."""
    key, value = IMBALANCE_DEFAULT
    judged = {"training split": class_counts(result.items, result.classes["train"], ("train",))}
    consequence = {"training split": f"cnnlab train sets --{key} {value} unless told otherwise"}
    if "test" in result.classes:
        judged["test/"] = folder_counts(result)["test"]
        consequence["test/"] = "judge the test figures by balanced accuracy or macro-F1"
    warnings = []
    for name, counts in judged.items():
        ratio = imbalance_ratio(counts.values())
        if ratio > IMBALANCE_RATIO:
            big, small = max(counts, key=counts.get), min(counts, key=counts.get)
            warnings.append(
                f"{name}: classes imbalanced {ratio:.1f}:1 (largest {big} {counts[big]}, smallest "
                f"{small} {counts[small]}; above {IMBALANCE_RATIO:g}:1, where {consequence[name]})"
            )
    return warnings


def _label_issues(root: str, items: list[Item], options: CheckOptions) -> list[LabelIssue]:
    test = [k for k, item in enumerate(items) if item.split == "test" and item.record.problem is None]
    paths = [os.path.join(root, items[k].path) for k in test]
    return label_issues(options.label_run, test, paths, [items[k].label for k in test], options.progress)


def check_requirements(path: str, options: CheckOptions) -> None:
    """Refuse before scanning what would fail after it: a missing package or run, no test split to rank."""
    try:
        import imagehash  # noqa: F401
    except ImportError:
        raise CnnlabError(
            "cnnlab data check needs imagehash: pip install imagehash cleanlab (cnnlab's extra 'check')"
        ) from None
    if options.features_run and not os.path.isdir(options.features_run):
        raise CnnlabError(f"{options.features_run}: no such run directory (--features RUN)")
    if not -1.0 <= options.similarity <= 1.0:
        raise CnnlabError(f"--similarity {options.similarity}: a correlation, -1 to 1")
    if not 0 <= options.threshold <= 64:
        raise CnnlabError(f"--threshold {options.threshold}: a Hamming distance of 64-bit hashes, 0 to 64")
    if options.label_run:
        if not os.path.isdir(options.label_run):
            raise CnnlabError(f"{options.label_run}: no such run directory (--label-issues RUN)")
        if not os.path.isdir(os.path.join(path, "test")) or not os.path.isdir(os.path.join(path, "train")):
            raise CnnlabError(
                f"{path}: --label-issues ranks the test images (ones the run never trained on); "
                "it needs PATH/train/ and PATH/test/"
            )


def run_check(path: str, options: CheckOptions | None = None) -> CheckResult:
    """Check the image folder `path`: read every file, pair duplicates, list problems and warnings, and
    with `options.label_run` rank suspected label errors of the test split."""
    options = options or CheckOptions()
    check_folder(path)
    check_requirements(path, options)
    source_warnings = training_source_warnings(options.label_run, path) if options.label_run else []
    layout, classes, items, warnings = scan_items(path)
    records = inspect_files([os.path.join(path, item.path) for item in items], options.workers, options.progress)
    for item, record in zip(items, records):
        item.record = record
    carve_validation(items, classes["train"], options.val_fraction, options.split, options.seed)
    min_size = options.min_size or adaptive_min_size(items)
    pairs, notes = find_pairs(items, options.threshold)
    if options.features_run:
        pairs = add_feature_pairs(path, items, pairs, options)
    result = CheckResult(
        os.path.abspath(path),
        layout,
        options,
        min_size,
        classes,
        items,
        pairs,
        find_problems(items, min_size),
        warnings,
    )
    result.warnings = summary_warnings(result) + warnings + notes + source_warnings
    if options.label_run:
        result.label_issues = _label_issues(path, items, options)
    return result
