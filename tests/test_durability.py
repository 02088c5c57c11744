"""Durable writes and exclusive run directories."""

import os
import stat
import sys

import pytest

from cnnlab import runs
from cnnlab.errors import CnnlabError


def test_write_atomic_fsyncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    runs.write_atomic(str(tmp_path / "a.json"), "{}")
    assert synced == [False, True]  # the file's data, then the folder entry of the rename
    assert (tmp_path / "a.json").read_text() == "{}"


def test_write_atomic_leaves_nothing_when_the_writer_fails(tmp_path):
    (tmp_path / "keep.bin").write_bytes(b"old")

    def broken(fh):
        fh.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        runs.write_atomic(str(tmp_path / "keep.bin"), broken)
    assert os.listdir(tmp_path) == ["keep.bin"] and (tmp_path / "keep.bin").read_bytes() == b"old"


def test_run_dir_is_created_exclusively(tmp_path):
    path = str(tmp_path / "runs" / "a")
    runs.create_run_dir(path)
    with pytest.raises(CnnlabError, match="another cnnlab process|already holds"):
        runs.create_run_dir(path)  # a second process given the same --out loses, even while the folder is empty


def test_an_empty_folder_given_as_out_is_claimed_once(tmp_path):
    path = tmp_path / "given"
    path.mkdir()
    runs.create_run_dir(str(path))
    with pytest.raises(CnnlabError, match="another cnnlab process"):
        runs.create_run_dir(str(path))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    with pytest.raises(CnnlabError, match="already holds files"):
        runs.create_run_dir(str(tmp_path / "full"))
    assert os.listdir(tmp_path / "full") == ["x.txt"]


def record_syncs_and_renames(monkeypatch) -> list[tuple]:
    """Spy on os.fsync and os.replace: ("fsync", path) and ("replace", source, target), in order."""
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, target):
        events.append(
            (
                "replace",
                os.path.realpath(source),
                os.path.realpath(os.path.dirname(target)) + os.sep + os.path.basename(target),
            )
        )
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def flushed_before_and_after(events: list[tuple], target: str) -> tuple[set[str], set[str]]:
    """(paths flushed before the rename onto `target`, paths flushed after it)."""
    at = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == os.path.realpath(target))
    source = events[at][1]
    before = {e[1] for e in events[:at] if e[0] == "fsync" and e[1].startswith(source)}
    return before, {e[1] for e in events[at + 1 :] if e[0] == "fsync"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_the_cifar_download_and_unpack_are_flushed_before_and_after_their_renames(tmp_path, monkeypatch):
    from test_cifar import make_archive

    from cnnlab.data.cifar import CIFAR10_DIRNAME, get_cifar10

    archive, md5 = make_archive(tmp_path)
    events = record_syncs_and_renames(monkeypatch)
    dest = str(tmp_path / "dl")
    folder = get_cifar10(dest, url=f"file://{archive}", md5=md5, progress=False)
    before, after = flushed_before_and_after(events, os.path.join(dest, "cifar-10-python.tar.gz"))
    assert len(before) == 1 and os.path.realpath(dest) in after  # the archive's data, then its folder entry
    before, after = flushed_before_and_after(events, os.path.join(dest, CIFAR10_DIRNAME))
    names = sorted(os.listdir(folder))
    assert {os.path.basename(p) for p in before} >= set(names)  # every unpacked file, before the rename
    assert os.path.realpath(dest) in after
    assert sorted(os.listdir(dest)) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]  # nothing left over


def test_an_interrupted_cifar_download_leaves_nothing(tmp_path, monkeypatch):
    import urllib.request

    from cnnlab.data import cifar
    from cnnlab.errors import DataError

    class Broken:
        headers = {"Content-Length": "100"}

        def __init__(self):
            self.sent = False

        def read(self, _n):
            if self.sent:
                raise OSError(104, "Connection reset by peer")
            self.sent = True
            return b"x" * 50

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Broken())
    with pytest.raises(DataError, match="could not download"):
        cifar.get_cifar10(str(tmp_path / "dl"), progress=False)
    assert os.listdir(tmp_path / "dl") == []
