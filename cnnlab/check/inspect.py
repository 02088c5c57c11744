"""One pass over the image files, in parallel: what each file is (size, mode, readable or not) and its
two fingerprints, a hash of its decoded pixels (exact duplicates) and a 64-bit perceptual hash
(near-duplicates)."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.decode import to_rgb
from ..errors import first_line
from ..progress import progress_bar

# A grayscale standard deviation below this (0-255 units) is a blank image: its perceptual hash carries
# no information (every flat image hashes alike), so it takes no part in near-duplicate pairing.
BLANK_STD = 2.0
# Fewer files than this per worker are read in this process: starting a worker (which imports cnnlab,
# hence torch) costs seconds.
FILES_PER_WORKER = 200


@dataclass(frozen=True)
class FileRecord:
    """What one file holds. `problem` is None for a readable image, else empty, truncated or unreadable."""

    bytes: int = 0
    width: int = 0
    height: int = 0
    mode: str = ""
    gray: bool = False  # every pixel has R == G == B (a grayscale mode, or gray stored as RGB)
    blank: bool = False  # (nearly) one flat colour
    digest: str = ""  # blake2b of the size and the RGB pixels
    phash: int = 0  # imagehash.phash, 8x8 DCT bits packed in an int
    problem: str | None = None
    detail: str = ""


def perceptual_hash(image: Image.Image) -> int:
    import imagehash

    bits = imagehash.phash(image).hash.ravel()
    return int(np.packbits(bits).view(">u8")[0])


def inspect_file(path: str) -> FileRecord:
    """The record of one file; a file that cannot be read gives a record with its problem, never an error."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        return FileRecord(problem="unreadable", detail=first_line(exc))
    if size == 0:
        return FileRecord(problem="empty", detail="zero-byte file")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            rgb = to_rgb(image)  # as training decodes it (16-bit images scaled, not clipped)
    except Exception as exc:  # any decoder error is this file's problem, not the scan's
        if isinstance(exc, UnidentifiedImageError):
            return FileRecord(bytes=size, problem="unreadable", detail="not an image Pillow can read")
        message = first_line(exc).replace(path, "<file>")  # the path itself may hold the word "truncated"
        kind = "truncated" if "truncated" in message.lower() else "unreadable"
        return FileRecord(bytes=size, problem=kind, detail=message)
    pixels = np.asarray(rgb)
    gray = bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())
    blank = float(np.asarray(rgb.convert("L"), dtype=np.float32).std()) < BLANK_STD
    digest = hashlib.blake2b(f"{rgb.width}x{rgb.height}:".encode() + pixels.tobytes(), digest_size=16).hexdigest()
    return FileRecord(
        bytes=size,
        width=rgb.width,
        height=rgb.height,
        mode=mode,
        gray=gray,
        blank=blank,
        digest=digest,
        phash=perceptual_hash(rgb),
    )


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def inspect_files(paths: list[str], workers: int = 0, progress: bool = True) -> list[FileRecord]:
    """Records of `paths`, in order, over `workers` processes (0: one per core; 1: in this process), at
    most one per FILES_PER_WORKER files."""
    workers = min(workers or default_workers(), max(1, len(paths) // FILES_PER_WORKER))
    with contextlib.ExitStack() as stack:
        if workers > 1:
            # spawn: the workers start clean whatever the caller has loaded (torch, threads)
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")))
            results = pool.map(inspect_file, paths, chunksize=max(1, min(256, len(paths) // (8 * workers))))
        else:
            results = map(inspect_file, paths)
        bar = stack.enter_context(progress_bar(progress, total=len(paths), unit="img", desc="checking"))
        records = []
        for record in results:
            records.append(record)
            bar.update()
        return records
