"""The official CIFAR-10 "python version" (cifar-10-batches-py): download, safe reading, and the image
folders `cnnlab data get` makes of it.

The batches are pickles. Unpickling can run arbitrary code, so they are read with an unpickler that
admits only what those files hold: plain containers, bytes/str and numpy arrays.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request

import numpy as np

from ..errors import DataError
from ..files import replace_dir, write_atomic
from ..progress import progress_bar

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIRNAME = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"

# The only globals a numpy array pickle needs. Anything else (os.system, builtins.eval, ...) is refused.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # pickle's Unpickler API
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def safe_unpickle(data: bytes, source: str):
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{source}: refused to load: the pickle would run code or is damaged ({exc}); "
            "use the official CIFAR-10 archive"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DataError(f"{source}: not a CIFAR batch file ({exc}); use the official CIFAR-10 archive") from None


def is_cifar_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "batches.meta")) and os.path.isfile(os.path.join(path, TEST_BATCH))


def _read(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = safe_unpickle(fh.read(), path)
    except FileNotFoundError:
        raise DataError(f"{path}: missing; the CIFAR-10 folder is incomplete, unpack the archive again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR batch file (holds {type(obj).__name__}, expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_batch(path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 NHWC, labels int64, file names) of one CIFAR batch file."""
    batch = _read(path)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in batch["filenames"]]
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a CIFAR-10 batch ({exc})") from None
    if not len(images) == len(labels) == len(names):
        raise DataError(f"{path}: data, labels and filenames differ in length")
    return np.ascontiguousarray(images), labels, names


def read_classes(folder: str) -> list[str]:
    meta = _read(os.path.join(folder, "batches.meta"))
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta["label_names"]]


def read_cifar_folder(folder: str, train: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    parts = [read_batch(os.path.join(folder, name)) for name in (TRAIN_BATCHES if train else [TEST_BATCH])]
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        [n for p in parts for n in p[2]],
    )


def md5_of(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: str, progress: bool = True) -> None:
    """Stream `url` to `dest` (written whole or not at all: files.write_atomic)."""

    def stream(out) -> None:
        with urllib.request.urlopen(url, timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress_bar(progress, total=total, unit="B", unit_scale=True, desc="downloading") as bar:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))

    try:
        write_atomic(dest, stream)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"could not download {url} ({reason}); download cifar-10-python.tar.gz on a machine "
            "with network access and run `cnnlab data get cifar10 DIR --archive FILE`"
        ) from None


def get_cifar10(
    dest_dir: str, archive: str | None = None, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5, progress: bool = True
) -> str:
    """Download (or take `archive`), check the MD5, unpack into `dest_dir`; returns the batches folder."""
    target = os.path.join(dest_dir, CIFAR10_DIRNAME)
    if is_cifar_folder(target):
        return target
    os.makedirs(dest_dir, exist_ok=True)
    owned = archive is None
    if archive is None:
        archive = os.path.join(dest_dir, "cifar-10-python.tar.gz")
        if not os.path.exists(archive):
            download(url, archive, progress)
    elif not os.path.isfile(archive):
        raise DataError(f"{archive}: no such archive file")
    found = md5_of(archive)
    if found != md5:
        if owned:
            os.remove(archive)
        raise DataError(
            f"{archive}: MD5 {found} does not match the published {md5}; "
            "the download is damaged or not the CIFAR-10 python archive, fetch it again"
        )
    staging = tempfile.mkdtemp(prefix=".unpack-", dir=dest_dir)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(staging, filter="data")
        unpacked = os.path.join(staging, CIFAR10_DIRNAME)
        if not is_cifar_folder(unpacked):
            raise DataError(f"{archive}: does not hold {CIFAR10_DIRNAME}/ with batches.meta and test_batch")
        replace_dir(unpacked, target)  # flushed, then renamed whole
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{archive}: cannot unpack ({exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


PARTIAL = ".partial"  # DIR.partial: the download, the batches and the images written so far, until DIR is whole


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def _write_png(path: str, image: np.ndarray) -> None:
    """One image, under a temporary name renamed when whole: an interrupted call leaves no half file."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(_png(image))
    os.replace(tmp, path)


def _safe_name(name: str, what: str, source: str) -> str:
    if not name or name in (".", "..") or os.path.basename(name) != name or "\0" in name:
        raise DataError(f"{source}: {what} {name!r} is not a plain file name; use the official CIFAR-10 archive")
    return name


def write_image_folders(batches: str, dest: str, progress: bool = True) -> dict[str, int]:
    """dest/train/<class>/<name>.png (the five training batches) and dest/test/<class>/<name>.png (test_batch),
    each named by the batch's own `filenames` (a second image of a class with the same name gets _1, _2, ...);
    an image already there from an interrupted call is kept. Returns the images per split."""
    meta = os.path.join(batches, "batches.meta")
    classes = [_safe_name(c, "class name", meta) for c in read_classes(batches)]
    counts = {}
    with progress_bar(progress, unit="img", desc="writing PNGs") as bar:
        for split, names in (("train", TRAIN_BATCHES), ("test", [TEST_BATCH])):
            used: set[tuple[int, str]] = set()
            counts[split] = 0
            for batch in names:
                source = os.path.join(batches, batch)
                images, labels, files = read_batch(source)
                for image, label, file in zip(images, labels.tolist(), files):
                    if not 0 <= label < len(classes):
                        raise DataError(f"{source}: label {label} outside the {len(classes)} classes of {meta}")
                    stem = os.path.splitext(_safe_name(file, "file name", source))[0]
                    name, n = f"{stem}.png", 0
                    while (label, name) in used:
                        n += 1
                        name = f"{stem}_{n}.png"
                    used.add((label, name))
                    folder = os.path.join(dest, split, classes[label])
                    path = os.path.join(folder, name)
                    if not os.path.exists(path):
                        os.makedirs(folder, exist_ok=True)
                        _write_png(path, image)
                    counts[split] += 1
                    bar.update()
    return counts


def _is_image_dataset(path: str) -> bool:
    return all(os.path.isdir(os.path.join(path, split)) for split in ("train", "test"))


def get_cifar10_folders(
    dest: str, archive: str | None = None, url: str = CIFAR10_URL, md5: str | None = None, progress: bool = True
) -> str:
    """CIFAR-10 as image folders in `dest` (train/<class>/*.png, 50,000; test/<class>/*.png, the full 10,000):
    downloaded (or taken from `archive`) and MD5-checked into `dest`.partial, written there, then renamed to
    `dest` whole. Called again after an interruption it goes on from what `dest`.partial holds; on a finished
    `dest` it does nothing. Returns `dest`."""
    dest = os.path.abspath(dest)
    staging = dest + PARTIAL
    if _is_image_dataset(dest):
        shutil.rmtree(staging, ignore_errors=True)  # interrupted after the rename: nothing left to do
        return dest
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise DataError(f"{dest}: exists and is not an empty folder; give a new folder for CIFAR-10's train/ and test/")
    batches = get_cifar10(staging, archive=archive, url=url, md5=md5 or CIFAR10_MD5, progress=progress)
    images = os.path.join(staging, "images")
    write_image_folders(batches, images, progress)
    if os.path.isdir(dest):
        os.rmdir(dest)  # empty (checked above)
    replace_dir(images, dest)
    shutil.rmtree(staging, ignore_errors=True)
    return dest
