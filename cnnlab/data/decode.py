"""Decode image files once, in parallel over the cores, into a uint8 NHWC array cached on disk.

The cache key covers the file list, each file's size and mtime, and how the files are decoded (size,
resize method and mode, EXIF handling), so a second load of an unchanged folder memory-maps one .npy
file instead of decoding again. A decode that left unreadable files out (--skip-bad-images) has a key of
its own and the list of those files beside it (KEY.skipped.json): it serves only a load that skips too,
and says again what it left out; a decode of every file serves both. Whether a folder's images share
one size (read from their headers to choose the stored size) is kept there too, by the folder's digest
(KEY.sizes.json). The cache keeps at most CNNLAB_CACHE_GB (default 5 GB), evicting the least recently
used entries; `cnnlab cache info|clear`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import DataError
from ..files import atomic_path, fsync_dir, write_atomic
from ..progress import progress_bar

CACHE_VERSION = 3  # part of every key: raised when the same file decodes to other pixels
_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR}


def cache_dir() -> str:
    return os.environ.get("CNNLAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "cnnlab")


def cache_room() -> int:
    """Bytes a new cache file can take: 90% of the free space of the cache's disk (of its nearest existing
    folder, before the cache is made)."""
    folder = os.path.abspath(cache_dir())
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return int(0.9 * shutil.disk_usage(folder).free)
    except OSError:
        return 0


def cache_limit() -> int:
    """Bytes the decode cache may hold (CNNLAB_CACHE_GB, default 5 GB); least recently used entries go first."""
    try:
        return int(float(os.environ.get("CNNLAB_CACHE_GB") or 5) * 1e9)
    except ValueError:
        raise DataError(f"CNNLAB_CACHE_GB={os.environ['CNNLAB_CACHE_GB']!r}: expected a number of GB") from None


def image_error(path: str, exc: Exception) -> DataError:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return DataError(f"{path}: refused: decompression bomb ({exc}); remove the file")
    return DataError(f"{path}: cannot read image ({exc}); remove or replace the file")


_IMAGE_ERRORS = (
    OSError,
    UnidentifiedImageError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def oriented_size(img: Image.Image, exif: bool) -> tuple[int, int]:
    """(height, width) of an opened image as it will be decoded (after its EXIF rotation, with `exif`)."""
    if exif and img.getexif().get(ExifTags.Base.Orientation) in _ROTATED:
        return img.width, img.height
    return img.height, img.width


def image_size_of(path: str, exif: bool = False) -> tuple[int, int]:
    """(height, width) of an image file, read from its header."""
    try:
        with Image.open(path) as img:
            return oriented_size(img, exif)
    except _IMAGE_ERRORS as exc:
        raise image_error(path, exc) from None


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB as Keras's load_img gives it, the one conversion training and the data check share. An integer
    image (modes I;16, I) is scaled by its range rather than clipped: values above 255 mean 16 bits (x 1/257,
    65535 -> 255); one whose values all fit in 0-255 holds 8-bit values and keeps them."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).clip(0, 65535)
        if arr.size and arr.max() > 255:
            arr = np.rint(arr / 257)
        img = Image.fromarray(arr.astype(np.uint8))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def fit_image(img: Image.Image, size: tuple[int, int], interpolation: str, resize: str = "squash") -> np.ndarray:
    """An opened image as uint8 (H, W, 3) RGB at `size` (height, width): stretched (squash), scaled to
    cover and centre-cropped (crop, torchvision's Resize + CenterCrop), or scaled to fit and padded with
    black (pad)."""
    img = to_rgb(img)
    if (img.height, img.width) != size:
        target, method = (size[1], size[0]), _RESAMPLE[interpolation]
        if resize == "crop":
            img = ImageOps.fit(img, target, method=method)
        elif resize == "pad":
            img = ImageOps.pad(img, target, method=method, color=(0, 0, 0))
        else:
            img = img.resize(target, method)
    return np.asarray(img, dtype=np.uint8)


@dataclass(frozen=True)
class DecodePlan:
    """How the files of a folder become stored images: the size (height, width), the resize method and
    mode, EXIF handling. Part of the cache key."""

    size: tuple[int, int]
    interpolation: str = "nearest"
    resize: str = "squash"
    exif: bool = False

    def key(self) -> list:
        return [list(self.size), self.interpolation, self.resize, self.exif]


def decode_file(
    path: str, size: tuple[int, int], interpolation: str, resize: str = "squash", exif: bool = False
) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; a dataset image that large is a bomb
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open(path, "rb") as fh:
                data = fh.read()
            with Image.open(io.BytesIO(data)) as img:  # the header only: size, format, EXIF
                stored = oriented_size(img, exif)
                scale = _draft_scale(stored, size, interpolation)
                pixels = decode_jpeg(data, img, exif, scale)
                if pixels is not None:
                    return fit_image(Image.fromarray(pixels), size, interpolation, resize)
                if scale > 1:
                    # JPEG: decode at 1/2, 1/4 or 1/8 scale straight from the DCT, still at least `size`
                    # (in the stored orientation); a large photo then costs a fraction of the time and memory,
                    # and no measurable accuracy (docs/photos.md, "Large JPEGs")
                    wanted = (size[1], size[0]) if stored == (img.height, img.width) else (size[0], size[1])
                    img.draft(None, wanted)
                if exif:
                    img = ImageOps.exif_transpose(img)
                return fit_image(img, size, interpolation, resize)
    except _IMAGE_ERRORS as exc:
        raise image_error(path, exc) from None


def _draft_scale(stored: tuple[int, int], size: tuple[int, int], interpolation: str) -> int:
    """The factor (1, 2, 4 or 8) by which a JPEG of `stored` (height, width) is decoded smaller, as PIL's
    draft chooses it: the largest that leaves it at least `size`; 1 (a full decode) for nearest, whose
    pixels a reduced decode would change."""
    if interpolation == "nearest" or stored[0] < 2 * size[0] or stored[1] < 2 * size[1]:
        return 1
    room = min(stored[0] // size[0], stored[1] // size[1])
    return next(scale for scale in (8, 4, 2, 1) if scale <= room)


def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:  # a speed-up only: PIL decodes every JPEG too
        return None
    return simplejpeg


def decode_jpeg(data: bytes, img: Image.Image, exif: bool, scale: int) -> np.ndarray | None:
    """The RGB pixels of the JPEG file `data` (opened as `img`) by simplejpeg: libjpeg-turbo, which PIL uses
    too, giving the same pixels without PIL's per-image overhead, reduced `scale` times in the DCT exactly
    as PIL's draft would. None where PIL is to decode it: not a grey or colour JPEG, turned by its EXIF
    orientation (with `exif`), a file simplejpeg cannot read (PIL then says why), simplejpeg not installed."""
    simplejpeg = _simplejpeg()
    if simplejpeg is None or img.format != "JPEG" or img.mode not in ("RGB", "L"):
        return None
    if exif and img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        return None
    wanted = (-(-img.height // scale), -(-img.width // scale))  # PIL's draft size
    try:
        pixels = simplejpeg.decode_jpeg(
            data, "RGB", fastdct=False, fastupsample=False, min_height=wanted[0], min_width=wanted[1]
        )
    except ValueError:
        return None
    # libjpeg scales by M/8: the smallest M that keeps `wanted` is 8/scale, but for tiny images (PIL then)
    return pixels if pixels.shape[:2] == wanted else None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: str, exif: bool = False) -> tuple[int, int] | None:
    """(height, width) of a PNG file from its IHDR chunk, without PIL (a fraction of its cost), or None
    when the file is not a PNG or, with `exif`, has a chunk that may carry an EXIF orientation (eXIf, or
    text, where PIL also looks), which PIL then reads."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
            if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
                return None
            size = int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
            fh.seek(8)
            while exif:  # walk the chunk headers to the end
                chunk = fh.read(8)
                if len(chunk) < 8 or chunk[4:8] in (b"eXIf", b"tEXt", b"zTXt", b"iTXt"):
                    return None
                if chunk[4:8] == b"IEND":
                    break
                fh.seek(int.from_bytes(chunk[:4], "big") + 4, os.SEEK_CUR)  # the data and its CRC
    except OSError:
        return None
    return size


def _sizes_chunk(args: tuple[list[str], bool]) -> list[tuple[int, int] | None]:
    paths, exif = args
    sizes: list[tuple[int, int] | None] = []
    for path in paths:
        fast = png_size(path, exif)
        if fast is not None:
            sizes.append(fast)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                sizes.append(image_size_of(path, exif))
        except (DataError, Image.DecompressionBombWarning):
            sizes.append(None)  # unreadable: decoding it says why (or skips it)
    return sizes


def read_sizes(
    paths: list[str], exif: bool = False, progress: bool = True, workers: int | None = None
) -> list[tuple[int, int] | None]:
    """(height, width) of each file as it will be decoded, from the headers alone, over `workers`
    processes; None for a file whose header cannot be read."""
    jobs, chunk = _chunks(paths, workers)
    with progress_bar(progress, total=len(paths), desc="reading sizes", unit="img", leave=False) as bar:
        results = _run(_sizes_chunk, [(paths[i : i + chunk], exif) for i in jobs], workers)
        try:
            sizes = []
            for part in results:
                sizes.extend(part)
                bar.update(len(part))
        finally:
            results.close()
    return sizes


def survey_path(digest: str, exif: bool) -> str:
    """The decode cache's file of a folder's size survey (size_survey), by the folder's digest."""
    key = hashlib.sha256(json.dumps([digest, "sizes", exif]).encode()).hexdigest()[:32]
    return os.path.join(cache_dir(), f"{key}.sizes.json")


def size_survey(
    root: str, files: list[str], digest: str, exif: bool = False, progress: bool = True
) -> tuple[int, tuple[int, int]] | None:
    """(index, size) of the first of `root`/`files` whose size (read_sizes) differs from the first
    readable one's, or None when all share one size. The headers are read once per version of the
    folder (its folder_digest): the answer is kept in the decode cache beside the decodes."""
    path = survey_path(digest, exif)
    try:
        with open(path, encoding="utf-8") as fh:
            saved = json.load(fh)
        if saved["other"] is None:
            return None
        index, (height, width) = int(saved["other"]), saved["size"]
        return index, (int(height), int(width))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or damaged: read the headers again
    sizes = read_sizes([os.path.join(root, name) for name in files], exif, progress)
    first = next((size for size in sizes if size is not None), None)
    other = next((i for i, size in enumerate(sizes) if size is not None and size != first), None)
    with contextlib.suppress(OSError):  # a read-only cache: the headers are read again next time
        os.makedirs(cache_dir(), exist_ok=True)
        write_atomic(path, json.dumps({"other": other, "size": None if other is None else list(sizes[other])}))
    return None if other is None else (other, sizes[other])


def _chunks(paths: list[str], workers: int | None) -> tuple[range, int]:
    """The start of each chunk of `paths` given to a worker process, and the chunk length."""
    workers = workers or os.cpu_count() or 1
    chunk = max(16, min(2048, len(paths) // (workers * 8) + 1))
    return range(0, len(paths), chunk), chunk


def _run(fn, jobs: list, workers: int | None):
    """fn over `jobs`, in order: in this process for one worker or one job, else in a pool of worker
    processes (forked on Linux); a generator, whose close() shuts the pool down."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) <= 1:
        yield from map(fn, jobs)
        return
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
    try:
        yield from pool.map(fn, jobs)
    finally:
        pool.shutdown(cancel_futures=True)


def _decode_chunk(args: tuple[list[str], DecodePlan, bool, str | None, int]) -> tuple[int, list[tuple[int, str]]]:
    """Decode `paths` into rows start.. of the array in the file `target` (a .npy memmap), or return them."""
    paths, plan, skip_bad, target, start = args
    out = np.zeros((len(paths), plan.size[0], plan.size[1], 3), dtype=np.uint8)
    bad = []
    for i, path in enumerate(paths):
        try:
            out[i] = decode_file(path, plan.size, plan.interpolation, plan.resize, plan.exif)
        except DataError as exc:
            if not skip_bad:
                raise
            bad.append((i, str(exc)))
    if target is None:
        return out, bad
    array = np.load(target, mmap_mode="r+")
    array[start : start + len(paths)] = out
    del array  # written to the file's pages; the finished file is synced once (atomic_path), not every chunk
    return None, bad


def decode_files(
    paths: list[str],
    plan: DecodePlan,
    out: np.ndarray,
    progress: bool = True,
    workers: int | None = None,
    skip_bad: bool = False,
    out_path: str | None = None,
) -> list[tuple[int, str]]:
    """Decode `paths` into `out`, uint8 (N, H, W, 3) (a memmap of the .npy file `out_path`, which the
    worker processes then write directly), spread over `workers` processes. A file that cannot be decoded
    raises DataError, or with `skip_bad` is listed as (index, reason) and left zero."""
    starts, chunk = _chunks(paths, workers)
    if out_path is not None:
        out.flush()
    pooled = (workers or os.cpu_count() or 1) > 1 and len(starts) > 1
    target = out_path if pooled else None  # worker processes write the file; in this process, `out` itself
    results = _run(_decode_chunk, [(paths[i : i + chunk], plan, skip_bad, target, i) for i in starts], workers)
    bad: list[tuple[int, str]] = []
    with progress_bar(progress, total=len(paths), desc="decoding", unit="img", leave=False) as bar:
        try:
            for start, (block, block_bad) in zip(starts, results):
                if block is not None:
                    out[start : start + len(block)] = block
                bad.extend((start + i, reason) for i, reason in block_bad)
                bar.update(min(chunk, len(paths) - start))
        finally:
            results.close()
    return bad


def folder_digest(root: str, files: list[str]) -> str:
    """A digest of the file list with each file's size and mtime (never their bytes): changes when any
    file does. The stats, a system call a file, run on a few threads (they wait on the file system, not
    on Python); the digest is that of the files in order."""
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_VERSION, os.path.abspath(root)]).encode())
    chunks = [files[i : i + 4096] for i in range(0, len(files), 4096)]
    with ThreadPoolExecutor(min(8, len(chunks)) or 1) as pool:
        for lines in pool.map(lambda chunk: _stat_lines(root, chunk), chunks):
            digest.update(lines.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _stat_lines(root: str, files: list[str]) -> str:
    lines = []
    for rel in files:
        try:
            st = os.stat(os.path.join(root, rel))
        except OSError as exc:
            raise DataError(f"{os.path.join(root, rel)}: cannot read file ({exc.strerror})") from None
        lines.append(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n")
    return "".join(lines)


def cache_key(digest: str, plan: DecodePlan, skipped: bool = False) -> str:
    """The key of a decode; `skipped`: one that left unreadable files out (--skip-bad-images), kept apart
    from the decodes of every file, so that it is never taken for one."""
    return hashlib.sha256(json.dumps([digest, plan.key(), *(["skip_bad"] if skipped else [])]).encode()).hexdigest()[
        :32
    ]


def cache_path(digest: str, plan: DecodePlan, skipped: bool = False) -> str:
    """The decode cache's file for a folder of `digest` (folder_digest) decoded as `plan` says."""
    return os.path.join(cache_dir(), f"{cache_key(digest, plan, skipped)}.npy")


def skipped_list_path(path: str) -> str:
    """The list of the files a cached decode left out, [[index, reason], ...], beside its .npy file."""
    return path.removesuffix(".npy") + ".skipped.json"


def cached_images(digest: str, plan: DecodePlan, count: int, skipped: bool = False) -> np.ndarray | None:
    """The cached images of the folder (a read-only memory map, marked as used now), or None when the
    cache holds none of the expected shape (or a damaged file, to be decoded again and replaced)."""
    path = cache_path(digest, plan, skipped)
    if not os.path.exists(path):
        return None
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if images.shape != (count, *plan.size, 3) or images.dtype != np.uint8:
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # last use, for the least-recently-used eviction
    return images


def cache_entries() -> list[tuple[str, int, float]]:
    """(path, bytes, last use) of the decode cache's files, least recently used first."""
    folder = cache_dir()
    entries = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if name.endswith(".npy") and not name.startswith("."):
            entries.append((path, st.st_size, st.st_mtime))
    return sorted(entries, key=lambda e: e[2])


def _remove_entry(path: str) -> None:
    """A cache file and the list of skipped files beside it, if any."""
    os.remove(path)
    with contextlib.suppress(OSError):
        os.remove(skipped_list_path(path))


def evict(keep: str | None = None, limit: int | None = None) -> list[str]:
    """Remove least recently used cache files until the cache fits its limit (never `keep`), and the
    leftovers of decodes killed before they finished (temporary files over a day old)."""
    limit = cache_limit() if limit is None else limit
    folder = cache_dir()
    removed = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            if ".tmp-" in name and time.time() - os.stat(path).st_mtime > 86400:
                os.remove(path)
                removed.append(path)
    entries = cache_entries()
    total = sum(size for _, size, _ in entries)
    for path, size, _ in entries:
        if total <= limit:
            break
        if path == keep:
            continue
        with contextlib.suppress(OSError):
            _remove_entry(path)  # a run that has it memory-mapped keeps reading it (POSIX)
            removed.append(path)
            total -= size
    return removed


def clear_cache() -> tuple[int, int]:
    """Remove every decode cache file (and the folders' size surveys); returns (decodes, bytes) removed."""
    entries = cache_entries()
    for path, _, _ in entries:
        with contextlib.suppress(OSError):
            _remove_entry(path)
    folder = cache_dir()
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.endswith(".sizes.json"):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))
    return len(entries), sum(size for _, size, _ in entries)


def load_images(
    root: str,
    files: list[str],
    plan: DecodePlan,
    digest: str,
    progress: bool = True,
    use_cache: bool = True,
    skip_bad: bool = False,
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """(images, skipped) of `root`/`files` (whose folder_digest is `digest`), decoded as `plan` says. The
    images are a read-only memory map of the cache file (decoded there once, straight from the worker
    processes; later loads of the unchanged folder read nothing until used), or an array in memory when
    the cache cannot be written. `skipped` lists (index, reason) of undecodable files, with `skip_bad`
    only; their rows are left zero."""
    shape = (len(files), *plan.size, 3)
    paths = [os.path.join(root, f) for f in files]
    if use_cache:
        found = cached_decode(digest, plan, len(files), skip_bad)
        if found is not None:
            return found
        try:
            return _decode_into_cache(paths, plan, digest, progress, skip_bad)
        except OSError as exc:  # a full or read-only cache disk: decode into memory, slower next time
            print(f"warning: could not write the decode cache {cache_dir()}: {exc.strerror}", file=sys.stderr)
    check_fits_in_memory(root, shape)
    out = np.empty(shape, dtype=np.uint8)
    return out, decode_files(paths, plan, out, progress, skip_bad=skip_bad)


def check_fits_in_memory(root: str, shape: tuple[int, ...]) -> None:
    """Refuse a decode into memory (no cache file) that would take more than 80% of the available memory."""
    from ..device import available_memory

    needed, limit = int(np.prod(shape)), int(0.8 * available_memory())
    if needed > limit:
        side = max(1, int((limit / (3 * shape[0])) ** 0.5))
        raise DataError(
            f"{root}: {shape[0]} images at {shape[1]}x{shape[2]} need {needed / 1e9:.1f} GB in memory without "
            f"the decode cache, more than the {limit / 1e9:.1f} GB available: make {cache_dir()} writable "
            f"(or set CNNLAB_CACHE), or --image-size {side} would fit"
        )


def cached_decode(
    digest: str, plan: DecodePlan, count: int, skip_bad: bool
) -> tuple[np.ndarray, list[tuple[int, str]]] | None:
    """(images, skipped) from the cache, or None: a decode of every file serves with or without
    `skip_bad`; one that left files out serves only with `skip_bad`, and only with its list of them."""
    images = cached_images(digest, plan, count)
    if images is not None:
        return images, []
    if not skip_bad:
        return None
    images = cached_images(digest, plan, count, skipped=True)
    try:
        with open(skipped_list_path(cache_path(digest, plan, skipped=True)), encoding="utf-8") as fh:
            skipped = [(int(index), str(reason)) for index, reason in json.load(fh)]
    except (OSError, ValueError, TypeError):
        return None  # no list (or a damaged one): decoded again
    return None if images is None else (images, skipped)


def _decode_into_cache(
    paths: list[str], plan: DecodePlan, digest: str, progress: bool, skip_bad: bool
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decodes `paths` into a new cache file: under the skipping key, with the list of what was left out
    written beside it first, when files were skipped; else under the key of a decode of every file."""
    whole, skipping = cache_path(digest, plan), cache_path(digest, plan, skipped=True)
    os.makedirs(cache_dir(), exist_ok=True)
    with atomic_path(skipping if skip_bad else whole) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *plan.size, 3))
        bad = decode_files(paths, plan, out, progress, skip_bad=skip_bad, out_path=tmp)
        out.flush()
        del out
        if bad:
            write_atomic(skipped_list_path(skipping), json.dumps(bad))
    path = skipping if bad else whole
    if skip_bad and not bad:  # nothing left out: the same images as a decode of every file, kept as one
        os.replace(skipping, whole)
        fsync_dir(cache_dir())
    evict(keep=path)
    return np.load(path, mmap_mode="r", allow_pickle=False), bad
