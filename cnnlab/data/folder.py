"""Image-folder scanning with the rules of Keras's `flow_from_directory`.

- classes are the sorted sub-folders of the root (files in the root are never a class);
- inside a class folder, files in nested folders count; folders are walked in sorted path order and
  files in sorted name order (Keras sorts `os.walk` by path); symlinked folders are not followed;
- accepted extensions: png jpg jpeg bmp ppm tif tiff, case-insensitive.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import DataError

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "bmp", "ppm", "tif", "tiff")


_EXTENSION_SET = frozenset(IMAGE_EXTENSIONS)


def is_image_name(name: str) -> bool:
    stem, dot, ext = name.rpartition(".")
    return bool(dot) and ext.lower() in _EXTENSION_SET


@dataclass(frozen=True)
class FolderScan:
    """The images of one folder of class folders: paths relative to `root`, in Keras order."""

    root: str
    classes: list[str]
    files: list[str]
    labels: list[int]


def check_folder(path: str) -> None:
    if not os.path.lexists(path):
        raise DataError(f"{path}: no such folder; check the path (or set CNNLAB_DATA)")
    if not os.path.isdir(path):
        raise DataError(f"{path}: is a file, expected a folder of class folders")


def list_classes(root: str) -> list[str]:
    """Sorted class folder names; a stray image directly in the root is an error (it belongs to no class)."""
    check_folder(root)
    try:
        names = sorted(os.listdir(root))
    except PermissionError:
        raise DataError(f"{root}: folder is not readable; check its permissions") from None
    classes, stray = [], []
    for name in names:
        full = os.path.join(root, name)
        if os.path.isdir(full):
            classes.append(name)
        elif is_image_name(name):
            stray.append(name)
    if stray:
        raise DataError(
            f"{os.path.join(root, stray[0])}: image outside any class folder "
            f"({len(stray)} such file(s)); move it into {root}/<class>/ or remove it"
        )
    if not classes:
        raise DataError(f"{root}: no class folders; expected {root}/<class>/<image files>")
    return classes


def list_class_files(class_dir: str) -> list[str]:
    """Image files under one class folder (nested folders included), in Keras's order, as full paths."""
    return [os.path.join(class_dir, rel) for rel in _image_files(class_dir)]


_DOT_EXTENSIONS = tuple("." + ext for ext in IMAGE_EXTENSIONS)


def _image_files(class_dir: str) -> list[str]:
    """Image files under `class_dir`, relative to it, in Keras's order: folders by their path, files by
    name. One os.scandir a folder, whose entries say which are folders without a stat (on Linux)."""
    folders, pending = [], [""]
    while pending:
        sub = pending.pop()
        names = []
        try:
            with os.scandir(os.path.join(class_dir, sub[:-1]) if sub else class_dir) as entries:
                for entry in entries:
                    # the entry's type, no stat: a link is taken for a file (a linked folder, which Keras
                    # skips, is then refused at decode if its name is an image's), and never followed
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(sub + entry.name + os.sep)
                    else:
                        names.append(entry.name)
        except OSError as err:
            raise DataError(f"{err.filename}: cannot read folder ({err.strerror}); check its permissions") from None
        folders.append((sub, names))
    found = []
    for sub, names in sorted(folders, key=lambda folder: folder[0][:-1]):  # as Keras sorts os.walk's paths
        names.sort()
        found.extend(sub + name if sub else name for name in names if name.lower().endswith(_DOT_EXTENSIONS))
    return found


def scan_folder(root: str, classes: list[str] | None = None) -> FolderScan:
    """All images of `root`/<class>/..., labelled by the index of their class in `classes`."""
    classes = list_classes(root) if classes is None else classes
    files: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        class_dir = os.path.join(root, name)
        class_files = _image_files(class_dir)
        if not class_files:
            raise DataError(
                f"{class_dir}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder"
            )
        prefix = name + os.sep
        files.extend([prefix + rel for rel in class_files])
        labels.extend([index] * len(class_files))
    return FolderScan(root=root, classes=classes, files=files, labels=labels)


def check_same_classes(train: list[str], test: list[str], train_root: str, test_root: str) -> None:
    if train != test:
        only_train = sorted(set(train) - set(test))
        only_test = sorted(set(test) - set(train))
        raise DataError(
            f"class folders of {train_root} and {test_root} differ: only in train: "
            f"{', '.join(only_train) or '-'}; only in test: {', '.join(only_test) or '-'}; "
            "make both hold the same class folders"
        )
