"""k-fold cross-validation: the stratified, seeded folds; `cnnlab sweep --folds K`, its results over folds x
seeds, its resume after a SIGKILL, and its refusals."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cnnlab import preset
from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.data.dataset import fold_indices, fold_of
from cnnlab.errors import ConfigError
from cnnlab.sweep import parse_grid, plan
from conftest import SWEEP_FLAGS, make_dataset, make_folder


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
