"""Tests that need CIFAR-10 skip with one reason where it is absent, and fail under CI (CI=true), which has it."""

import os
import pathlib
import shutil
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
NEEDS_CIFAR = "def test_needs_cifar(cifar_root):\n    assert os.path.isdir(cifar_root)\n"


def run_suite(tmp_path, data: str, ci: str | None) -> subprocess.CompletedProcess:
    """pytest on one test that takes the `cifar_root` fixture, with this conftest, CNNLAB_DATA=`data` and CI=`ci`."""
    suite = tmp_path / "suite"
    suite.mkdir(parents=True)
    shutil.copy(HERE / "conftest.py", suite / "conftest.py")
    (suite / "test_one.py").write_text("import os\n\n\n" + NEEDS_CIFAR)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["CNNLAB_DATA"] = data
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(suite)],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
    )


def test_a_missing_dataset_skips_with_one_reason(tmp_path):
    missing = str(tmp_path / "nowhere")
    for ci in (None, "false", ""):
        done = run_suite(tmp_path / f"ci-{ci}", missing, ci)
        assert done.returncode == 0 and "1 skipped" in done.stdout, done.stdout
        assert f"CIFAR-10 image folders not found at {missing}; set CNNLAB_DATA" in done.stdout


def test_under_ci_a_missing_dataset_is_an_error(tmp_path):
    missing = str(tmp_path / "nowhere")
    done = run_suite(tmp_path, missing, "true")
    assert done.returncode == 1 and "1 error" in done.stdout and "skipped" not in done.stdout, done.stdout
    assert f"CIFAR-10 image folders not found at {missing}; set CNNLAB_DATA" in done.stdout


def test_a_dataset_with_train_and_test_folders_is_used(tmp_path):
    data = tmp_path / "cifar"
    (data / "train").mkdir(parents=True)
    (data / "test").mkdir()
    for ci in (None, "true"):
        done = run_suite(tmp_path / f"ci-{ci}", str(data), ci)
        assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout
