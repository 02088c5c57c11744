"""Item 11 of the hardening review: durable writes and exclusive run directories."""
import os
import stat

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
