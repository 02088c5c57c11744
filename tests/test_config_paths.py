"""Item 4 of the hardening review: a run keeps the absolute data path it was trained on."""

import json
import os

from conftest import make_dataset

from cnnlab.cli import main

TINY = ["--batch-size", "8", "--epochs", "1", "--threads", "1", "--no-progress", "--eval-batch-size", "64"]


def test_data_from_the_environment_is_saved_as_an_absolute_path(tmp_path, monkeypatch, capsys):
    root = make_dataset(tmp_path / "ds", 12)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNLAB_DATA", "ds")  # relative, from the environment
    assert main(["train", *TINY, "--out", "run"]) == 0
    saved = json.load(open(tmp_path / "run" / "config.json"))["config"]["data"]
    assert saved == os.path.abspath(root)
    # later the variable points elsewhere: evaluate still reads the run's own data
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "nowhere"))
    capsys.readouterr()
    assert main(["evaluate", "run"]) == 0
    assert "30 images, test" in capsys.readouterr().out


def test_a_relative_data_flag_is_saved_absolute(tmp_path, monkeypatch):
    make_dataset(tmp_path / "ds", 12)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    assert main(["train", *TINY, "--data", "ds", "--out", "run"]) == 0
    assert json.load(open(tmp_path / "run" / "config.json"))["config"]["data"] == str(tmp_path / "ds")
