"""`--seed S` of a sweep or search: the seeds used are S..S+n-1, printed and recorded."""

import json
import os

import optuna
import pytest
from conftest import SWEEP_FLAGS, make_dataset

from cnnlab import preset
from cnnlab.cli import main
from cnnlab.runs import load_run
from cnnlab.studies import open_study
from cnnlab.sweep import parse_grid, plan


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("seeds") / "ds", 20)


def test_the_plan_offsets_the_seeds_by_the_base_seed(capsys):
    base = preset("fast", seed=5)
    units, _ = plan(base, parse_grid(["lr=0.1,0.2"], base), 2)
    assert sorted({u.seed for u in units}) == [5, 6]
    assert main(["sweep", "--grid", "lr=0.1,0.2", "--seeds", "2", "--seed", "5", "--dry-run"]) == 0
    assert "seeds: 5, 6" in capsys.readouterr().out.splitlines()


def test_a_sweep_trains_and_records_the_seeds_it_was_given(dataset, tmp_path, capsys):
    out = str(tmp_path / "sw")
    assert (
        main(
            [
                "sweep",
                "--data",
                dataset,
                "--grid",
                "epochs=1",
                "--seeds",
                "2",
                "--seed",
                "7",
                "--out",
                out,
                *SWEEP_FLAGS,
            ]
        )
        == 0
    )
    assert "seeds: 7, 8" in capsys.readouterr().out.splitlines()
    trials = open_study(out).get_trials()
    assert sorted(t.user_attrs["seed"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE) == [7, 8]
    assert sorted(load_run(os.path.join(out, "runs", f"epochs-1_seed-{s}"))["seed"] for s in (7, 8)) == [7, 8]
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["seed_values"] == [7, 8] and res["rows"][0]["val"]["n"] == 2


def test_a_search_trains_every_trial_with_the_given_seed(dataset, tmp_path, capsys):
    out = str(tmp_path / "search")
    assert (
        main(
            [
                "sweep",
                "--search",
                "tpe",
                "--data",
                dataset,
                "--param",
                "lr=0.01,0.05",
                "--trials",
                "2",
                "--epochs",
                "1",
                "--seed",
                "4",
                "--out",
                out,
                *SWEEP_FLAGS,
            ]
        )
        == 0
    )
    assert "seed 4" in capsys.readouterr().out
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["seed"] == 4
    assert [load_run(os.path.join(out, "runs", r["run"]))["seed"] for r in res["rows"]] == [4, 4]


ESCAPE = """
import sys
from cnnlab import preset
from cnnlab.errors import CnnlabError
from cnnlab.sweep import Unit, running
Unit.dirname = property(lambda self: "../outside")
unit = Unit((("lr", 0.1),), 0, (1,))
try:
    running._train_unit(sys.argv[1], preset("fast", data=sys.argv[1]), unit, 1, False)
except CnnlabError as exc:
    print("refused:", exc)
"""


@pytest.mark.parametrize("optimize", [[], ["-O"]])
def test_a_run_directory_outside_the_sweep_is_refused_even_under_python_O(tmp_path, optimize):
    import subprocess
    import sys

    out = tmp_path / "sw"
    (out / "runs").mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, *optimize, "-c", ESCAPE, str(out)], capture_output=True, text=True, timeout=120
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("refused: "), proc.stdout + proc.stderr
    assert "outside: not a run directory inside" in lines[0], lines[0]
    assert sorted(os.listdir(tmp_path)) == ["sw"] and os.listdir(out) == ["runs"] and os.listdir(out / "runs") == []
