"""Saved configs are read with the defaults they were saved under (config.saved_config), not today's:
a run or sweep saved before a key existed is described and resumed as it ran."""

import json
import os

import pytest
from conftest import make_dataset

from cnnlab import preset, train_run
from cnnlab.report import build_report
from cnnlab.studies import open_study
from cnnlab.sweep import create_sweep, load_spec

OLDER_KEYS = ("resize", "exif")  # added after the first runs were saved; before, images were squashed, no EXIF


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("saved") / "ds", 20)


def test_the_report_of_a_run_saved_before_a_key_existed(dataset, tmp_path):
    run = str(tmp_path / "run")
    train_run(preset("fast", data=dataset, epochs=1, batch_size=8, threads=1, progress=False), run)
    path = os.path.join(run, "config.json")
    saved = json.load(open(path))
    assert saved["config"]["resize"] != "squash" and saved["config"]["exif"] is True  # today's defaults
    for key in OLDER_KEYS:
        del saved["config"][key]
    with open(path, "w") as fh:
        json.dump(saved, fh)
    md, _ = build_report(run)
    text = open(md).read()
    assert "| resize | squash |" in text and "| exif | False |" in text


def test_a_sweep_spec_saved_before_a_key_existed(tmp_path):
    out = str(tmp_path / "sw")
    spec = create_sweep(out, preset("fast", data=str(tmp_path)), {"lr": [0.1, 0.2]}, 1)
    older = {**spec, "config": {k: v for k, v in spec["config"].items() if k not in OLDER_KEYS}}
    open_study(out).set_user_attr("cnnlab_spec", older)
    base, _, _ = load_spec(out)
    assert (base.resize, base.exif) == ("squash", False)


def test_a_run_config_file_given_to_train_is_read_as_it_was_saved(tmp_path):
    """`cnnlab train --config RUN/config.json` trains again as that run did: keys it lacks take the behaviour
    of when it was saved."""
    from cnnlab.config import load_config_file

    saved = {
        "config": {k: v for k, v in preset("fast").to_dict().items() if k not in OLDER_KEYS},
        "environment": {},
        "data": {},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    cfg = load_config_file(str(path))
    assert (cfg.resize, cfg.exif) == ("squash", False)
    plain = tmp_path / "plain.json"  # a config file a user wrote takes today's defaults
    plain.write_text(json.dumps({"epochs": 3}))
    assert load_config_file(str(plain)).resize == preset("fast").resize


def test_a_run_saved_before_split_seed_existed_keeps_its_split():
    """Before split_seed, a random split was drawn with the training seed, and keras was the default."""
    from cnnlab.config import saved_config

    older = {k: v for k, v in preset("fast").to_dict().items() if k not in ("split", "split_seed")}
    assert (saved_config(older).split, preset("fast").split) == ("keras", "random")
    drawn = saved_config({**older, "split": "random", "seed": 3})
    assert (drawn.split, drawn.split_seed, drawn.seed) == ("random", 3, 3)
    today = saved_config(preset("fast", seed=3).to_dict())
    assert (today.split, today.split_seed) == ("random", 0)
