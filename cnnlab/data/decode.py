"""Decode image files once, in parallel over the cores, into a uint8 NHWC array cached on disk.

The cache key covers the file list, each file's size and mtime, the decode size and the interpolation,
so a second load of an unchanged folder reads one .npy file instead of decoding again.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..files import write_atomic

CACHE_VERSION = 1
_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR}


def cache_dir() -> str:
    return os.environ.get("CNNLAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "cnnlab")


def image_error(path: str, exc: Exception) -> DataError:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return DataError(f"{path}: refused: decompression bomb ({exc}); remove the file")
    return DataError(f"{path}: cannot read image ({exc}); remove or replace the file")


_IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError,
                 Image.DecompressionBombWarning)


def image_size_of(path: str) -> tuple[int, int]:
    """(height, width) of an image file, read from its header."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except _IMAGE_ERRORS as exc:
        raise image_error(path, exc) from None


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB as Keras's load_img gives it; 16-bit images are scaled to 8 bits rather than clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if arr.dtype != np.uint8:
            arr = (arr.astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def fit_image(img: Image.Image, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """An opened image as uint8 (H, W, 3) RGB at `size` (height, width)."""
    img = to_rgb(img)
    if (img.height, img.width) != size:
        img = img.resize((size[1], size[0]), _RESAMPLE[interpolation])
    return np.asarray(img, dtype=np.uint8)


def decode_file(path: str, size: tuple[int, int], interpolation: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; a dataset image that large is a bomb
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return fit_image(img, size, interpolation)
    except _IMAGE_ERRORS as exc:
        raise image_error(path, exc) from None


def _decode_chunk(args: tuple[list[str], tuple[int, int], str, bool]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    paths, size, interpolation, skip_bad = args
    out = np.zeros((len(paths), size[0], size[1], 3), dtype=np.uint8)
    bad = []
    for i, path in enumerate(paths):
        try:
            out[i] = decode_file(path, size, interpolation)
        except DataError as exc:
            if not skip_bad:
                raise
            bad.append((i, str(exc)))
    return out, bad


def decode_files(paths: list[str], size: tuple[int, int], interpolation: str, progress: bool = True,
                 workers: int | None = None, skip_bad: bool = False) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode `paths` into one (N, H, W, 3) uint8 array, spread over `workers` processes. A file that
    cannot be decoded raises DataError, or with `skip_bad` is listed as (index, reason) and left zero."""
    from tqdm import tqdm

    workers = workers or os.cpu_count() or 1
    chunk = max(64, min(2048, len(paths) // (workers * 8) + 1))
    jobs = [(paths[i:i + chunk], size, interpolation, skip_bad) for i in range(0, len(paths), chunk)]
    out = np.empty((len(paths), size[0], size[1], 3), dtype=np.uint8)
    bar = tqdm(total=len(paths), desc="decoding", unit="img", disable=not progress, leave=False)
    start, bad = 0, []
    if workers == 1 or len(jobs) == 1:
        results = map(_decode_chunk, jobs)
        pool = None
    else:
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
        results = pool.map(_decode_chunk, jobs)
    try:
        for block, block_bad in results:
            out[start:start + len(block)] = block
            bad.extend((start + i, reason) for i, reason in block_bad)
            start += len(block)
            bar.update(len(block))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return out, bad


def cache_key(root: str, files: list[str], size: tuple[int, int], interpolation: str) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_VERSION, os.path.abspath(root), size, interpolation]).encode())
    for rel in files:
        try:
            st = os.stat(os.path.join(root, rel))
        except OSError as exc:
            raise DataError(f"{os.path.join(root, rel)}: cannot read file ({exc.strerror})") from None
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]


def load_images(root: str, files: list[str], size: tuple[int, int], interpolation: str,
                progress: bool = True, use_cache: bool = True,
                skip_bad: bool = False) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """(images, skipped) of `root`/`files`, from the cache when the folder is unchanged. `skipped`
    lists (index, reason) of the files that could not be decoded, with `skip_bad` only."""
    key = cache_key(root, files, size, interpolation)
    path = os.path.join(cache_dir(), f"{key}.npy")
    if use_cache and os.path.exists(path):
        try:
            images = np.load(path, allow_pickle=False)
            if images.shape == (len(files), size[0], size[1], 3) and images.dtype == np.uint8:
                return images, []
        except (OSError, ValueError):
            pass  # a damaged cache file is decoded again and replaced
    images, bad = decode_files([os.path.join(root, f) for f in files], size, interpolation, progress,
                               skip_bad=skip_bad)
    if use_cache and not bad:  # a folder with broken files is not cached: it should be fixed, not kept
        os.makedirs(cache_dir(), exist_ok=True)
        try:
            write_atomic(path, lambda fh: np.save(fh, images, allow_pickle=False))
        except OSError as exc:  # a full or read-only cache disk slows the next load, nothing more
            print(f"warning: could not write the decode cache {path}: {exc.strerror}", file=sys.stderr)
    return images, bad
