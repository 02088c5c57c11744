"""--select-metric of sweeps and searches: its default (balanced accuracy on an imbalanced training set,
printed), the value each trial is told, and a metric the history does not record."""

import json
import os

import numpy as np
import optuna
import pytest
from conftest import SWEEP_FLAGS, make_dataset, make_folder

from cnnlab import preset
from cnnlab.cli import main
from cnnlab.errors import ConfigError
from cnnlab.runs import load_run
from cnnlab.studies import choose_select_metric


def test_the_default_is_accuracy_unless_the_training_classes_are_imbalanced():
    balanced, skewed = (["a", "b"], np.array([10, 9])), (["a", "b", "c"], np.array([40, 12, 10]))
    assert choose_select_metric(None, balanced)[0] == "val_accuracy"
    assert choose_select_metric(None, (["a", "b"], np.array([30, 10])))[0] == "val_accuracy"  # 3 is not above 3
    metric, why = choose_select_metric(None, skewed)
    assert metric == "val_balanced_accuracy" and "largest/smallest 4.0 > 3" in why
    assert choose_select_metric("val_macro_f1", skewed) == (
        "val_macro_f1",
        "selecting on val_macro_f1 (--select-metric)",
    )
    assert choose_select_metric(None, None)[0] == "val_accuracy"  # a dataset not there yet
    with pytest.raises(ConfigError, match="--select-metric"):
        choose_select_metric("test_accuracy", balanced)


def imbalanced_folder(root):
    """train/: class a 12 images, b 3 (ratio 4); test/ balanced."""
    make_folder(os.path.join(root, "train"), classes=("a", "b"), per_class=12)
    for i in range(3, 12):
        os.remove(os.path.join(root, "train", "b", f"img_{i:03d}.png"))
    make_folder(os.path.join(root, "test"), classes=("a", "b"), per_class=4, seed=1)
    return str(root)


@pytest.mark.parametrize("extra", [["--grid", "lr=0.05,0.1"], ["--search", "tpe", "--param", "lr=0.01..0.1"]])
def test_the_chosen_metric_is_printed(extra, tmp_path, capsys):
    root = imbalanced_folder(tmp_path / "skewed")
    assert main(["sweep", "--data", root, *extra, "--val-fraction", "0.34", "--dry-run"]) == 0
    assert "selecting on val_balanced_accuracy: the training classes are imbalanced" in capsys.readouterr().out
    assert (
        main(
            ["sweep", "--data", root, *extra, "--val-fraction", "0.34", "--select-metric", "val_accuracy", "--dry-run"]
        )
        == 0
    )
    assert "selecting on val_accuracy (--select-metric)" in capsys.readouterr().out
    balanced = make_dataset(tmp_path / "even", 10)
    assert main(["sweep", "--data", balanced, *extra, "--dry-run"]) == 0
    assert "selecting on val_accuracy (--select-metric to choose)" in capsys.readouterr().out


def test_a_metric_the_history_lacks_fails_the_trial_naming_it(tmp_path, monkeypatch):
    from cnnlab.studies import open_study
    from cnnlab.sweep import create_sweep, running

    out, base, grid = str(tmp_path / "sw"), preset("fast", data=str(tmp_path)), {"lr": [0.1]}
    create_sweep(out, base, grid, 1, select_metric="val_macro_f1")
    history = [{"epoch": e, "val_accuracy": 0.5, "time_s": 1.0} for e in range(1, base.epochs + 1)]
    monkeypatch.setattr(running, "_train_unit", lambda *args, **kwargs: history)
    running.work(out, progress=False)
    trials = open_study(out).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL]
    assert trials[0].user_attrs["fail_reason"] == (
        "--select-metric val_macro_f1: the run's history records no val_macro_f1; choose val_accuracy"
    )


def test_a_sweep_selects_on_the_metric_it_was_given(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", 12, 4)
    out = tmp_path / "sw"
    assert (
        main(
            [
                "sweep",
                "--data",
                root,
                "--grid",
                "lr=0.05,0.1",
                "--seeds",
                "2",
                "--epochs",
                "1",
                "--val-fraction",
                "0.25",
                "--select-metric",
                "val_macro_f1",
                "--out",
                str(out),
                *SWEEP_FLAGS,
            ]
        )
        == 0
    )
    first = load_run(str(out / "runs" / "lr-0.05_seed-0"))["history"][-1]
    if "val_macro_f1" not in first:
        pytest.skip("this branch's history.json has no val_macro_f1 yet (the metrics change adds it)")
    res = json.load(open(out / "results.json"))
    assert res["select_metric"] == "val_macro_f1"
    for row in res["rows"]:
        told = [load_run(str(out / "runs" / run))["history"][-1]["val_macro_f1"] for run in row["runs"]]
        assert row["val_values"] == told
    assert "chosen on validation: " in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    assert "Chosen on validation macro-F1: **" in open(out / "report.md").read()


def test_a_search_records_the_metric_it_selects_on(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", 12, 4)
    out = tmp_path / "se"
    assert (
        main(
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
                "0.25",
                "--select-metric",
                "val_accuracy",
                "--out",
                str(out),
                *SWEEP_FLAGS,
            ]
        )
        == 0
    )
    res = json.load(open(out / "results.json"))
    assert res["select_metric"] == "val_accuracy"
    for row in res["rows"]:
        assert row["val"] == load_run(str(out / "runs" / row["run"]))["history"][-1]["val_accuracy"]
    assert main(["report", str(out)]) == 0
    report = open(out / "report.md").read()
    assert "median pruning on validation accuracy (`val_accuracy`)" in report
    assert "Chosen on validation accuracy: **trial" in report
