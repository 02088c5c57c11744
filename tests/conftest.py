import os
import pathlib

import numpy as np
import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
CIFAR = os.environ.get("CNNLAB_DATA") or str(ROOT.parent / "shared" / "datasets" / "cifar10")


@pytest.fixture(autouse=True, scope="session")
def _cache_in_tmp(tmp_path_factory):
    # Keep the decode cache out of the user's home; one cache for the whole session.
    os.environ["CNNLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def cifar_root() -> str:
    """The CIFAR-10 image folders (train/, test/). Where they are absent the test is skipped, except under CI
    (CI=true), which has them and must run every test."""
    if not all(os.path.isdir(os.path.join(CIFAR, part)) for part in ("train", "test")):
        reason = f"CIFAR-10 image folders not found at {CIFAR}; set CNNLAB_DATA"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return CIFAR


@pytest.fixture(scope="session")
def cifar_run(cifar_root, tmp_path_factory) -> str:
    """One small finished run on CIFAR-10 (fast preset, 1,000 images, 2 epochs), trained once for the whole
    session and shared by the tests that read a real run (predict, export, report); they must not change it."""
    from cnnlab import preset, train_run

    out = str(tmp_path_factory.mktemp("cifar-run") / "run")
    train_run(preset("fast", data=cifar_root, subset=1000, epochs=2, batch_size=128, progress=False), out)
    return out


def write_image(path, array: np.ndarray, mode: str | None = None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)


def make_folder(root, classes=("a", "b", "c"), per_class=6, size=16, seed=0) -> str:
    """A tiny image-folder dataset: each class a distinct base colour plus noise."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        for i in range(per_class):
            base = np.zeros((size, size, 3), dtype=np.int16)
            base[..., k % 3] = 180
            noise = rng.integers(0, 60, (size, size, 3))
            write_image(os.path.join(root, name, f"img_{i:03d}.png"), (base + noise).clip(0, 255).astype(np.uint8))
    return str(root)


def make_dataset(root, train_per_class: int, test_per_class: int = 10) -> str:
    """A tiny train/ + test/ dataset of 16x16 images in 3 classes."""
    make_folder(os.path.join(root, "train"), per_class=train_per_class)
    make_folder(os.path.join(root, "test"), per_class=test_per_class, seed=1)
    return str(root)


def kill_env(point: str, env: dict | None = None) -> dict:
    """`env` (os.environ's by default) for a child process whose trainings signal themselves at `point`
    (EPOCH:STEP[:SIGNAL[:RANK]], tests/hooks/killpoint.py): the hooks folder first on its PYTHONPATH."""
    env = dict(os.environ if env is None else env)
    hooks = str(ROOT / "tests" / "hooks")
    env["PYTHONPATH"] = os.pathsep.join([hooks, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else hooks
    env["CNNLAB_TEST_KILL_AT"] = point
    return env


# Flags for sweeps of tiny trainings: small batches, one thread, constant lr (so epochs are shared).
SWEEP_FLAGS = [
    "--batch-size",
    "8",
    "--eval-batch-size",
    "64",
    "--threads",
    "1",
    "--no-progress",
    "--schedule",
    "constant",
    "--lr",
    "0.05",
    "--warmup-epochs",
    "0",
]


@pytest.fixture
def tiny_dataset(tmp_path) -> str:
    return make_dataset(tmp_path / "ds", 20)
