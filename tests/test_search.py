"""TPE search with pruning: trials counted, resumable, pruned trials stop early."""

import json
import os

import optuna
import pytest
import torch
from conftest import make_dataset

from cnnlab import preset
from cnnlab.cli import main
from cnnlab.errors import ConfigError
from cnnlab.search import parse_space
from cnnlab.studies import open_study

TINY = ["--eval-batch-size", "64", "--threads", "1", "--no-progress", "--epochs", "3"]


def test_search_runs_the_trials_and_resumes(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", 30)
    out = str(tmp_path / "search")
    args = [
        "sweep",
        "--search",
        "tpe",
        "--trials",
        "5",
        "--param",
        "lr=0.01..0.5:log",
        "--param",
        "batch_size=8,16",
        "--data",
        str(root),
        "--out",
        out,
        *TINY,
    ]
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


def test_pruned_trial_stops_training(tmp_path, capsys):
    # Three earlier trials of the study reached 100% validation accuracy at epoch 2: the median pruner
    # (from epoch 1 on) must stop a trial that is at chance there (lr 1e-9 learns nothing) after epoch 2 of 3.
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="cnnlab", direction="maximize")
    lr = {"lr": optuna.distributions.CategoricalDistribution([1e-9])}
    for _ in range(3):
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": 1e-9}, distributions=lr, value=1.0, intermediate_values={1: 0.0, 2: 1.0, 3: 1.0}
            )
        )
    out = tmp_path / "search"
    assert (
        main(
            [
                "sweep",
                "--search",
                "tpe",
                "--trials",
                "4",
                "--param",
                "lr=1e-9",
                "--storage",
                storage,
                "--data",
                make_dataset(tmp_path / "ds", 30),
                "--out",
                str(out),
                "--batch-size",
                "8",
                *TINY,
            ]
        )
        == 0
    )
    assert "trial 3 {'lr': 1e-09}: pruned after epoch 2" in capsys.readouterr().err
    trial = optuna.load_study(storage=storage, study_name="cnnlab").trials[3]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [1, 2] and max(trial.intermediate_values.values()) < 1.0
    # its run directory: configured for 3 epochs, stopped after 2: never finished, the last state saved is epoch 1's
    run_dir = out / "runs" / "trial-0003"
    assert json.loads((run_dir / "config.json").read_text())["config"]["epochs"] == 3
    assert not any((run_dir / name).exists() for name in ("COMPLETE", "history.json", "model.safetensors"))
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (2, 0) and [r["epoch"] for r in state["history"]] == [1]
    assert [r["state"] for r in json.loads((out / "results.json").read_text())["rows"]] == ["COMPLETE"] * 3 + ["PRUNED"]


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
