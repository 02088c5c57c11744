"""TPE search with pruning: trials counted, resumable, pruned trials stop early."""
import json
import os

import optuna
import pytest

from cnnlab import preset
from cnnlab.cli import main
from cnnlab.errors import ConfigError
from cnnlab.search import ReportAndPrune, parse_space
from cnnlab.sweep import open_study
from conftest import make_dataset

TINY = ["--eval-batch-size", "64", "--threads", "1", "--no-progress", "--epochs", "3"]


def test_search_runs_the_trials_and_resumes(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", 30)
    out = str(tmp_path / "search")
    args = ["sweep", "--search", "tpe", "--trials", "5", "--param", "lr=0.01..0.5:log", "--param", "batch_size=8,16",
            "--data", str(root), "--out", out, *TINY]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "best on validation: trial" in text
    study = open_study(out)
    finished = [t for t in study.get_trials() if t.state.is_finished()]
    assert len(finished) == 5 and all(0.01 <= t.params["lr"] <= 0.5 for t in finished)
    assert main(args) == 0  # resumes: nothing left to do
    assert len(open_study(out).get_trials()) == 5
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["best"]["params"]["batch_size"] in (8, 16)


def test_pruned_trial_stops_training(tmp_path):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    callback = ReportAndPrune(study.ask())
    with pytest.raises(optuna.TrialPruned, match="after epoch 1"):
        callback.on_epoch_end(1, {"val_accuracy": 0.5}, None)


def test_space_parsing():
    base = preset("fast")
    space = parse_space(["lr=0.001..0.1:log", "epochs=2..6", "optimizer=sgd,adam"], base)
    assert space["lr"] == {"kind": "float", "low": 0.001, "high": 0.1, "log": True}
    assert space["epochs"] == {"kind": "int", "low": 2, "high": 6, "log": False}
    assert space["optimizer"] == {"kind": "choice", "values": ["sgd", "adam"]}
    with pytest.raises(ConfigError, match="a range needs a numeric key"):
        parse_space(["optimizer=a..b"], base)
    with pytest.raises(ConfigError, match="'epochs' must be positive"):
        parse_space(["epochs=0,2"], base)
