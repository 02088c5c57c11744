"""Durable file writes, for every writer in cnnlab (run files, sweep results, reports, the decode
cache, exports): a file is written to a temporary name in its folder, flushed to disk, renamed over
its final name, and the folder itself is flushed, so that after a crash or power loss the file is
either whole or absent, never half-written."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import BinaryIO

from .errors import CnnlabError

CLAIM = ".cnnlab-claim"


def printable(name: str) -> str:
    """A name from the user's folders, printable and writable as UTF-8: bytes of a file name that are not
    UTF-8 (decoded by Python as surrogate escapes) are shown as \\xNN, as `ls -b` shows them."""
    try:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name decoded to
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def fsync_dir(folder: str) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and Windows) cannot fsync a folder
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path beside `path` to write to; on success it is flushed and renamed over `path` (and the
    folder flushed), on failure removed. For writers that need a path (np.lib.format.open_memmap)."""
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(staged: str, path: str) -> None:
    """Move the folder `staged` (written beside `path`, in the same file system) to `path`: its files and
    folders are flushed first, then it is renamed and the parent folder flushed, so that after a crash
    `path` is either the whole folder or absent."""
    for folder, _dirs, names in os.walk(staged):
        for name in names:
            _fsync_file(os.path.join(folder, name))
        fsync_dir(folder)
    os.replace(staged, path)
    fsync_dir(os.path.dirname(path))


def write_atomic(path: str, data: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Write `data` (bytes, text as UTF-8, or a function that writes into the open binary file) to `path`,
    whole or not at all."""
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def create_new_dir(path: str) -> str:
    """Create the folder `path` for this process alone. It must not exist or be an empty folder; it is
    claimed by creating the marker file .cnnlab-claim in it exclusively (O_EXCL), so of two processes
    given the same --out one wins and the other gets an error, even before anything else is written.
    The marker stays with the run. Parents are created as needed."""
    if os.path.isfile(path):
        raise CnnlabError(f"{path}: is a file; choose another --out")
    os.makedirs(path, exist_ok=True)
    try:
        fd = os.open(os.path.join(path, CLAIM), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise CnnlabError(f"{path}: another cnnlab process is writing there; choose another --out") from None
    os.close(fd)
    if os.listdir(path) != [CLAIM]:
        os.remove(os.path.join(path, CLAIM))
        raise CnnlabError(f"{path}: already holds files; choose another --out or delete it first")
    fsync_dir(path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    return path
