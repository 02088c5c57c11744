"""CIFAR-10 python batches: safe unpickling, the MD5 check, and the no-network message."""

import hashlib
import os
import pickle
import tarfile

import numpy as np
import pytest

from cnnlab.data import load_dataset
from cnnlab.data.cifar import get_cifar10, safe_unpickle
from cnnlab.errors import DataError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def fake_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"labels": [int(x) for x in rng.permutation(np.arange(n) % 10)],  # every class, shuffled
        b"filenames": [f"img_{seed}_{i:04d}.png".encode() for i in range(n)],
        b"batch_label": b"fake",
    }


def write_cifar(folder, n=20):
    os.makedirs(folder, exist_ok=True)
    for i in range(1, 6):
        with open(os.path.join(folder, f"data_batch_{i}"), "wb") as fh:
            pickle.dump(fake_batch(n, i), fh, protocol=2)
    with open(os.path.join(folder, "test_batch"), "wb") as fh:
        pickle.dump(fake_batch(n, 0), fh, protocol=2)
    with open(os.path.join(folder, "batches.meta"), "wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}, fh, protocol=2)
    return folder


def batch_images(batch):
    """{file name: (image HWC, label)} of a fake batch, as the CIFAR docs define its rows."""
    images = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return {name.decode(): (image, label) for name, image, label in zip(batch[b"filenames"], images, batch[b"labels"])}


def as_dict(split):
    return {name: (image, label) for name, image, label in zip(split.files, split.images, split.labels)}


def same_images(got, expected):
    assert got.keys() == expected.keys()
    for name, (image, label) in expected.items():
        assert np.array_equal(got[name][0], image) and got[name][1] == label, name


@pytest.mark.parametrize("where", ["parent", "folder"])
def test_reads_the_python_version_folder(tmp_path, where):
    folder = write_cifar(str(tmp_path / "cifar-10-batches-py"))
    ds = load_dataset(str(tmp_path) if where == "parent" else folder, val_fraction=0.1, split="keras", progress=False)
    assert ds.classes == CLASSES
    assert (len(ds.train), len(ds.val), len(ds.test)) == (90, 10, 20)
    # every row of the five training batches, with its own label, once, in train or validation
    training = {}
    for i in range(1, 6):
        training.update(batch_images(fake_batch(20, i)))
    assert not set(ds.train.files) & set(ds.val.files)
    same_images({**as_dict(ds.train), **as_dict(ds.val)}, training)
    # the Keras split: the first file name of each class (sorted) is its validation image
    first_of_class = {c: min(n for n, (_, label) in training.items() if label == c) for c in range(10)}
    assert sorted(ds.val.files) == sorted(first_of_class.values())
    # the test split is test_batch, in Keras order (by class, then file name)
    same_images(as_dict(ds.test), batch_images(fake_batch(20, 0)))
    assert list(zip(ds.test.labels.tolist(), ds.test.files)) == sorted(zip(ds.test.labels.tolist(), ds.test.files))


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cnnlab-pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    if os.path.exists("/tmp/cnnlab-pwned"):
        os.remove("/tmp/cnnlab-pwned")
    payload = pickle.dumps({b"data": Exploit()}, protocol=2)
    with pytest.raises(DataError, match="refused to load.*posix.system|refused to load.*os.system"):
        safe_unpickle(payload, "evil_batch")
    assert not os.path.exists("/tmp/cnnlab-pwned")
    folder = write_cifar(str(tmp_path / "cifar-10-batches-py"))
    with open(os.path.join(folder, "data_batch_3"), "wb") as fh:
        fh.write(payload)
    with pytest.raises(DataError, match="data_batch_3: refused to load"):
        load_dataset(str(tmp_path), progress=False)
    assert not os.path.exists("/tmp/cnnlab-pwned")


def make_archive(tmp_path):
    src = write_cifar(str(tmp_path / "src" / "cifar-10-batches-py"))
    archive = str(tmp_path / "cifar-10-python.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    return archive, hashlib.md5(open(archive, "rb").read()).hexdigest()


def test_md5_mismatch_is_refused_and_nothing_unpacked(tmp_path):
    archive, _ = make_archive(tmp_path)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="does not match the published c58f30108f718f92721af3b95e74349a"):
        get_cifar10(str(dest), archive=archive)
    assert not (dest / "cifar-10-batches-py").exists()


def test_md5_match_unpacks(tmp_path):
    archive, md5 = make_archive(tmp_path)
    folder = get_cifar10(str(tmp_path / "dest"), archive=archive, md5=md5)
    assert sorted(os.listdir(folder))[:2] == ["batches.meta", "data_batch_1"]


def test_download_through_url_checks_md5(tmp_path):
    archive, md5 = make_archive(tmp_path)
    folder = get_cifar10(str(tmp_path / "dl"), url=f"file://{archive}", md5=md5, progress=False)
    assert os.path.isfile(os.path.join(folder, "test_batch"))


def test_no_network_says_how_to_use_a_local_copy(tmp_path):
    with pytest.raises(DataError, match="could not download.*--archive FILE"):
        get_cifar10(str(tmp_path / "dl"), url="http://127.0.0.1:9/cifar-10-python.tar.gz", progress=False)
    assert not any(name.endswith(".part") for name in os.listdir(tmp_path / "dl"))


# --- cnnlab data get: the image folders ------------------------------------------------------------


def read_png_folders(root, split):
    """{file name: (image HWC, class index)} of root/split/<class>/*.png."""
    from PIL import Image

    found = {}
    for label, name in enumerate(CLASSES):
        folder = os.path.join(root, split, name)
        for file in os.listdir(folder) if os.path.isdir(folder) else []:
            found[file] = (np.asarray(Image.open(os.path.join(folder, file))), label)
    return found


def test_data_get_writes_the_image_folders_with_the_batches_file_names(tmp_path, monkeypatch, capsys):
    from cnnlab.cli import main
    from cnnlab.data import cifar

    archive, md5 = make_archive(tmp_path)
    monkeypatch.setattr(cifar, "CIFAR10_MD5", md5)  # the fake archive's, as the published one for the real
    dest = str(tmp_path / "cifar10")
    assert main(["data", "get", "cifar10", dest, "--archive", archive]) == 0
    assert capsys.readouterr().out.endswith(f"train with: cnnlab train --data {dest}\n")
    assert sorted(os.listdir(tmp_path)) == ["cifar-10-python.tar.gz", "cifar10", "src"]  # no .partial left
    assert sorted(os.listdir(dest)) == ["test", "train"]
    training = {}
    for i in range(1, 6):
        training.update(batch_images(fake_batch(20, i)))
    same_images(read_png_folders(dest, "train"), training)  # every row, its pixels, its class, its own name
    same_images(read_png_folders(dest, "test"), batch_images(fake_batch(20, 0)))
    ds = load_dataset(dest, val_fraction=0.0, progress=False)  # what `cnnlab train --data DIR` reads
    assert ds.classes == CLASSES and (len(ds.train), len(ds.test)) == (100, 20)
    assert main(["data", "get", "cifar10", dest, "--archive", archive]) == 0  # done: nothing to do


def test_data_get_goes_on_after_an_interruption_keeping_the_images_written(tmp_path, monkeypatch):
    from cnnlab.data import cifar

    archive, md5 = make_archive(tmp_path)
    dest = str(tmp_path / "cifar10")
    written, original = [], cifar._write_png

    def killed_after_33(path, image):
        if len(written) == 33:
            raise KeyboardInterrupt
        written.append(path)
        original(path, image)

    monkeypatch.setattr(cifar, "_write_png", killed_after_33)
    with pytest.raises(KeyboardInterrupt):
        cifar.get_cifar10_folders(dest, archive=archive, md5=md5, progress=False)
    assert not os.path.exists(dest)  # nothing at DIR until every image is there
    assert len(written) == 33 and all(os.path.isfile(p) for p in written)
    monkeypatch.setattr(cifar, "_write_png", original)
    again = []
    monkeypatch.setattr(cifar, "_write_png", lambda path, image: (again.append(path), original(path, image)))
    assert cifar.get_cifar10_folders(dest, archive=archive, md5=md5, progress=False) == dest
    assert len(again) == 120 - 33 and not set(again) & {p for p in written}  # the 33 kept, not written again
    assert not os.path.exists(dest + ".partial")
    same_images(read_png_folders(dest, "test"), batch_images(fake_batch(20, 0)))
    assert sum(len(files) for _, _, files in os.walk(os.path.join(dest, "train"))) == 100


def test_data_get_keeps_images_whose_names_repeat_and_refuses_a_folder_in_use(tmp_path):
    from cnnlab.data import cifar

    batches = write_cifar(str(tmp_path / "cifar-10-batches-py"))
    batch = fake_batch(20, 0)
    batch[b"labels"] = [3] * 20
    batch[b"filenames"] = [b"same.png"] * 20
    with open(os.path.join(batches, "test_batch"), "wb") as fh:
        pickle.dump(batch, fh, protocol=2)
    counts = cifar.write_image_folders(batches, str(tmp_path / "out"), progress=False)
    assert counts == {"train": 100, "test": 20}
    assert sorted(os.listdir(tmp_path / "out" / "test" / "cat")) == sorted(
        ["same.png"] + [f"same_{i}.png" for i in range(1, 20)]
    )
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"used: exists and is not an empty folder; give a new folder"):
        cifar.get_cifar10_folders(str(used), archive="/nonexistent.tar.gz", progress=False)
    assert os.listdir(used) == ["notes.txt"]
