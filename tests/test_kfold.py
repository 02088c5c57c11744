"""k-fold cross-validation: the stratified, seeded folds; `cnnlab sweep --folds K`, its results over folds x
seeds, its resume after a SIGKILL, and its refusals."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import SWEEP_FLAGS, kill_env, make_dataset, make_folder

from cnnlab import preset
from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.data.dataset import fold_indices, fold_of
from cnnlab.errors import ConfigError
from cnnlab.sweep import parse_grid, plan


@pytest.mark.parametrize("counts,folds", [([7, 10, 3, 5], 3), ([5, 5, 5], 5), ([2, 9], 2), ([11], 4)])
def test_folds_are_stratified_disjoint_and_cover_the_training_set(counts, folds):
    labels = np.repeat(np.arange(len(counts)), counts)[::-1].copy()  # stored order need not be by class
    assigned = fold_of(labels, folds, seed=3)
    for cls, count in enumerate(counts):  # each class as evenly as possible over the folds
        per_fold = np.bincount(assigned[labels == cls], minlength=folds)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == count
    sizes = np.bincount(assigned, minlength=folds)
    assert sizes.max() - sizes.min() <= 1  # and the folds as a whole
    held_out = []
    for fold in range(folds):
        train, val = fold_indices(labels, folds, fold, seed=3)
        assert not set(train) & set(val) and sorted([*train, *val]) == list(range(len(labels)))
        held_out.extend(val.tolist())
    assert sorted(held_out) == list(range(len(labels)))  # every image held out exactly once


def test_folds_are_deterministic_by_seed():
    labels = np.repeat(np.arange(3), 20)
    assert (fold_of(labels, 4, seed=1) == fold_of(labels, 4, seed=1)).all()
    assert not (fold_of(labels, 4, seed=1) == fold_of(labels, 4, seed=2)).all()


def test_a_dataset_loaded_with_a_fold_holds_that_fold_out(tmp_path):
    root = make_dataset(tmp_path / "ds", 7, 4)
    folds = [load_dataset(root, val_fraction=0.5, folds=3, fold=f, fold_seed=5, progress=False) for f in range(3)]
    files = sorted(folds[0].train.files + folds[0].val.files)
    assert sorted(f for ds in folds for f in ds.val.files) == files  # the folds' held-out parts tile the training set
    assert [len(ds.val) for ds in folds] == [7, 7, 7] and all(len(ds.test) == 12 for ds in folds)  # test untouched
    assert sorted(np.bincount(folds[0].val.labels).tolist()) == [2, 2, 3]


def test_fold_keys_are_checked():
    base = preset("fast")
    for values in ({"folds": 1}, {"folds": 3, "fold": 3}, {"fold": 1}, {"folds": -2}):
        with pytest.raises(ConfigError, match="folds"):
            base.replace(**values)
    with pytest.raises(ConfigError, match="--folds"):
        parse_grid(["fold=0,1"], base)


def test_the_plan_trains_every_cell_on_every_fold_and_shares_epochs_within_a_fold():
    base = preset("fast", schedule="constant", folds=3, seed=4)
    units, reason = plan(base, parse_grid(["lr=0.1,0.2", "epochs=1,2"], base), 2)
    assert "epochs shared" in reason
    assert len(units) == 2 * 3 * 2  # lr values x folds x seeds, each serving epochs 1 and 2
    assert {(u.seed, u.fold) for u in units} == {(s, f) for s in (4, 5) for f in range(3)}
    assert all(u.serves == (1, 2) for u in units) and len({u.key for u in units}) == len(units)


# --- `cnnlab sweep --folds K` end to end -------------------------------------------------------------


def run_cli(args, env=None, timeout=600):
    """`cnnlab ARGS` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "cnnlab.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("kfold") / "ds", 12, 4)


def fold_sweep(dataset, out):
    return [
        "sweep",
        "--data",
        dataset,
        "--grid",
        "epochs=1,2",
        "--folds",
        "3",
        "--seeds",
        "2",
        "--out",
        str(out),
        *SWEEP_FLAGS,
    ]


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """An uninterrupted 3-fold x 2-seed sweep, and what it printed."""
    out = tmp_path_factory.mktemp("ref") / "sw"
    proc = run_cli(fold_sweep(dataset, out))
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def rows_of(out):
    return [
        (r["cell"], r["val"], r["test"], r["val_values"], r["runs"])
        for r in json.load(open(os.path.join(out, "results.json")))["rows"]
    ]


def test_a_fold_sweep_reports_folds_x_seeds(dataset, reference):
    out, printed = reference
    assert "3 folds x 2 seed(s): 6 training(s) in all" in printed  # epochs shared within each fold
    assert "n = 3 folds x 2 seed(s) per cell" in printed and "selecting on val_accuracy" in printed
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["folds"] == 3 and res["select_metric"] == "val_accuracy"
    assert [r["val"]["n"] for r in res["rows"]] == [6, 6]
    assert sorted(os.listdir(os.path.join(out, "runs"))) == sorted(
        f"epochs-2_seed-{s}_fold-{f}{ext}" for s in (0, 1) for f in range(3) for ext in ("", ".json")
    )
    for seed in (0, 1):  # every seed sees the same folds: the sweep's seed, not the run's, draws them
        for fold in range(3):
            cfg = json.load(open(os.path.join(out, "runs", f"epochs-2_seed-{seed}_fold-{fold}", "config.json")))[
                "config"
            ]
            assert (cfg["folds"], cfg["fold"], cfg["fold_seed"], cfg["seed"]) == (3, fold, 0, seed)
    with open(os.path.join(out, "results.csv"), newline="") as fh:
        first = next(csv.DictReader(fh))  # the comparison column holds commas, quoted
    assert first["n"] == "6" and first["folds"] == "3" and "paired on the 3 folds" in first["comparison"]
    assert main(["report", str(out)]) == 0
    report = open(os.path.join(out, "report.md")).read()
    assert "3-fold cross-validation x 2 seeds (0, 1) per cell (3 x 2 = 6 trainings)" in report
    assert "n=6 results: 3 folds x 2 seeds" in report and "validation accuracy (`val_accuracy`)" in report


def test_a_fold_sweep_killed_by_sigkill_resumes_to_the_same_results(dataset, reference, tmp_path):
    out = tmp_path / "sw"
    # the first unit's worker dies in its second epoch, after its first checkpoint
    killed = run_cli(fold_sweep(dataset, out), env=kill_env("2:2"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len([d for d in os.listdir(out / "runs") if not d.endswith(".json")]) == 1
    time.sleep(0.5)
    resumed = run_cli(fold_sweep(dataset, out))
    assert resumed.returncode == 0, resumed.stderr
    assert rows_of(out) == rows_of(reference[0])


# --- refusals ---------------------------------------------------------------------------------------


def test_a_class_with_fewer_images_than_folds_is_refused_in_one_line(tmp_path):
    root = make_folder(tmp_path / "few", classes=("cat", "dog"), per_class=4)
    for name in ("img_000.png", "img_001.png"):
        os.remove(os.path.join(root, "dog", name))
    out = tmp_path / "sw"
    proc = run_cli(
        [
            "sweep",
            "--data",
            root,
            "--grid",
            "lr=0.05,0.1",
            "--folds",
            "3",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--out",
            str(out),
            *SWEEP_FLAGS,
        ]
    )
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "class 'dog' has 2 training image(s)" in proc.stderr and "--folds 3" in proc.stderr, proc.stderr
    assert not out.exists() or not os.listdir(out / "runs")


def test_a_sweep_whose_validation_split_cannot_be_made_is_refused_before_training(tmp_path):
    # val_fraction 0.1 of 6 images is no image: selection would have nothing but the test split
    root = make_dataset(tmp_path / "small", 6, 4)
    out = tmp_path / "sw"
    proc = run_cli(
        [
            "sweep",
            "--data",
            root,
            "--grid",
            "lr=0.05,0.1",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--val-fraction",
            "0.1",
            "--out",
            str(out),
            *SWEEP_FLAGS,
        ]
    )
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "val_fraction" in proc.stderr and "never chooses on the test split" in proc.stderr, proc.stderr
    assert not out.exists() or not os.listdir(out / "runs")


def test_a_search_whose_validation_split_cannot_be_made_is_refused_before_training(tmp_path):
    root = make_dataset(tmp_path / "small", 6, 4)
    out = tmp_path / "se"
    proc = run_cli(
        [
            "sweep",
            "--search",
            "tpe",
            "--trials",
            "2",
            "--param",
            "lr=0.01..0.1",
            "--data",
            root,
            "--epochs",
            "1",
            "--val-fraction",
            "0.1",
            "--out",
            str(out),
            *SWEEP_FLAGS,
        ]
    )
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "never chooses on the test split" in proc.stderr, proc.stderr
    assert not out.exists() or not os.listdir(out / "runs")


def test_folds_make_a_validation_split_where_val_fraction_is_zero():
    base = preset("fast", val_fraction=0.0, folds=3)
    units, _ = plan(base, parse_grid(["lr=0.1,0.2"], base), 1)  # no refusal: the folds are the validation splits
    assert len(units) == 6
    with pytest.raises(ConfigError, match="val_fraction"):
        plan(base.replace(folds=0), parse_grid(["lr=0.1,0.2"], base), 1)
