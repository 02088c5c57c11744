"""Sweeps: the plan, shared epochs equal to separate runs, statistics, resume, failures, workers."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import SWEEP_FLAGS, make_dataset, make_folder

from cnnlab import preset, train_run
from cnnlab.cli import main
from cnnlab.runs import load_run
from cnnlab.stats import summarize
from cnnlab.studies import open_study
from cnnlab.sweep import parse_grid, plan

TINY = SWEEP_FLAGS


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("sweep") / "ds", 30)


def test_seed_grid_plan_is_3_trainings_of_30_epochs_per_seed(capsys):
    assert main(["sweep", "--grid", "seed-grid", "--preset", "seed", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 training(s) per seed (90 epochs) serving 9 cell(s)" in out
    assert out.count("epochs=30 -> evaluated at epochs 20, 25, 30") == 3


def test_epochs_not_shared_when_the_schedule_depends_on_them():
    base = preset("fast")
    units, reason = plan(base, parse_grid(["seed-grid"], base), 2)
    assert len(units) == 18 and "not shared: schedule onecycle" in reason


def test_shared_epochs_equal_separate_runs(dataset, tmp_path):
    base = preset(
        "fast",
        data=dataset,
        batch_size=8,
        eval_batch_size=64,
        threads=1,
        progress=False,
        schedule="constant",
        lr=0.05,
        warmup_epochs=0.0,
        seed=2,
    )
    long = train_run(base.replace(epochs=3), str(tmp_path / "long"), test_at_epochs=(2, 3))
    short = train_run(base.replace(epochs=2), str(tmp_path / "short"))
    long_history = load_run(str(tmp_path / "long"))["history"]
    short_history = load_run(str(tmp_path / "short"))["history"]
    assert long_history[1]["val_accuracy"] == short_history[1]["val_accuracy"]
    assert long_history[1]["val_loss"] == short_history[1]["val_loss"]
    assert long_history[1]["test_accuracy"] == short["test"]["accuracy"]
    assert long_history[2]["test_accuracy"] == long["test"]["accuracy"]  # the last epoch: the final test
    assert "test_accuracy" not in long_history[0]


def trials_by_cell_seed(out):
    study = open_study(out)
    done = {}
    for t in study.get_trials():
        if t.state == optuna.trial.TrialState.COMPLETE:
            key = (t.user_attrs["cell"], t.user_attrs["seed"])
            done[key] = done.get(key, 0) + 1
    return done


def test_sweep_table_files_resume_and_failures(dataset, tmp_path, capsys):
    out = str(tmp_path / "sw")
    args = [
        "sweep",
        "--data",
        dataset,
        "--grid",
        "lr=0.05,1e30",
        "--grid",
        "epochs=1,2",
        "--seeds",
        "2",
        "--out",
        out,
        *[a for a in TINY if a not in ("--lr", "0.05")],
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "chosen on validation: lr=0.05" in text and "failed: lr=1e+30" in text and "non-finite loss" in text
    assert {"results.csv", "results.json", "heatmap.png", "optuna.journal", "sweep.json"} <= set(os.listdir(out))
    res = json.loads(open(os.path.join(out, "results.json")).read())
    good = [r for r in res["rows"] if r["cell"].startswith("lr=0.05")]
    assert [r["val"]["n"] for r in good] == [2, 2]
    assert trials_by_cell_seed(out) == {(f"lr=0.05,epochs={e}", s): 1 for e in (1, 2) for s in (0, 1)}
    marker = os.path.join(out, "runs", "lr-0.05_epochs-2_seed-0", "COMPLETE")
    stamp = os.stat(marker).st_mtime_ns
    assert main(args) == 0  # the same command again: resumes, trains nothing
    assert os.stat(marker).st_mtime_ns == stamp
    assert trials_by_cell_seed(out) == {(f"lr=0.05,epochs={e}", s): 1 for e in (1, 2) for s in (0, 1)}
    again = json.loads(open(os.path.join(out, "results.json")).read())
    assert again["rows"] == res["rows"]


def test_two_workers_give_the_same_table_and_a_killed_worker_is_retried(dataset, tmp_path):
    common = ["--data", dataset, "--grid", "batch_size=8,16", "--grid", "epochs=2,4", "--seeds", "2", *TINY]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    assert main(["sweep", *common, "--out", one]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnlab.cli", "sweep", *common, "--out", two, "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not any(
        os.path.exists(os.path.join(two, "runs", d, "checkpoint.pt"))
        for d in (os.listdir(os.path.join(two, "runs")) if os.path.isdir(os.path.join(two, "runs")) else [])
    ):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the main worker dies mid-trial; its helper finishes its own trial
    proc.wait()
    time.sleep(1.0)
    assert main(["sweep", *common, "--out", two, "--workers", "2"]) == 0
    done = trials_by_cell_seed(two)
    assert len(done) == 8 and set(done.values()) == {1}

    def table(folder):
        return [(r["cell"], r["val"], r["test"]) for r in json.load(open(os.path.join(folder, "results.json")))["rows"]]

    assert table(one) == table(two)


def test_statistics():
    s = summarize([0.80, 0.82, 0.84])
    assert s["n"] == 3 and abs(s["mean"] - 0.82) < 1e-12 and abs(s["std"] - 0.02) < 1e-12
    assert abs(s["ci_high"] - 0.82 - 4.302652729911275 * 0.02 / 3**0.5) < 1e-9


def test_sweep_file(tmp_path, capsys):
    path = tmp_path / "study.toml"
    path.write_text(
        'preset = "seed"\nseeds = 2\n[config]\nlr = 0.0005\n[grid]\nbatch_size = [100, 200, 250]\n'
        "epochs = [20, 25, 30]\n"
    )
    assert main(["sweep", "--sweep-file", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 training(s) per seed (90 epochs) serving 9 cell(s); 2 seed(s): 6 training(s) in all" in out
    path.write_text("colour = 1\n")
    assert main(["sweep", "--sweep-file", str(path), "--dry-run"]) == 2
    assert "unknown key(s) colour" in capsys.readouterr().err


def test_ctrl_c_stops_the_sweep_and_the_same_command_resumes_it(dataset, tmp_path):
    out = str(tmp_path / "sw")
    common = [
        "--data",
        dataset,
        "--grid",
        "batch_size=8,16",
        "--grid",
        "epochs=2,4",
        "--seeds",
        "1",
        *TINY,
        "--out",
        out,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnlab.cli", "sweep", *common],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (
        os.path.isdir(os.path.join(out, "runs"))
        and any(
            os.path.exists(os.path.join(out, "runs", d, "checkpoint.pt")) for d in os.listdir(os.path.join(out, "runs"))
        )
    ):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "rerun the same cnnlab sweep command" in err, err
    assert main(["sweep", *common]) == 0
    done = trials_by_cell_seed(out)
    assert len(done) == 4 and set(done.values()) == {1}


def test_cells_of_a_grid_without_epochs_are_named_by_the_grid_alone():
    from cnnlab.sweep import cell_name, cells_of

    base = preset("fast")
    grid = parse_grid(["lr=0.1,0.2"], base)
    units, reason = plan(base, grid, 1)
    assert "no epochs in the grid" in reason
    assert [cell_name(u.cell(u.serves[0])) for u in units] == [cell_name(c) for c in cells_of(grid)]


def test_a_sweep_adapts_its_recipe_as_train_does_keeping_the_swept_keys(tmp_path, capsys):
    root = make_folder(tmp_path / "ds" / "train", classes=("a", "b"), per_class=40)
    for i in range(10, 40):  # 40:10, and 45 training images after the validation split: batch 512 is too large
        os.remove(os.path.join(root, "b", f"img_{i:03d}.png"))
    make_folder(tmp_path / "ds" / "test", classes=("a", "b"), per_class=4, seed=1)
    flags = [
        "--data",
        str(tmp_path / "ds"),
        "--epochs",
        "1",
        "--eval-batch-size",
        "64",
        "--threads",
        "1",
        "--log",
        "none",
    ]
    assert main(["sweep", *flags, "--grid", "lr=0.1,0.2", "--seeds", "1", "--out", str(tmp_path / "sw")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("small training set (45 images): batch_size 512 -> 8") == 1
    assert printed.count("imbalanced training set (ratio 4.0): sampler uniform -> balanced") == 1
    swept = [load_run(str(tmp_path / "sw" / "runs" / f"lr-{lr}_seed-0"))["config"] for lr in (0.1, 0.2)]
    assert main(["train", *flags, "--lr", "0.1", "--out", str(tmp_path / "run")]) == 0  # the cell lr=0.1 again
    trained = load_run(str(tmp_path / "run"))["config"]

    def recipe(cfg: dict) -> dict:
        return {key: cfg[key] for key in ("batch_size", "lr", "epochs", "warmup_epochs", "sampler", "class_weight")}

    assert recipe(trained)["batch_size"] == 8 and recipe(trained)["sampler"] == "balanced"
    assert recipe(swept[0]) == recipe(trained) and recipe(swept[1]) == {**recipe(trained), "lr": 0.2}  # lr as swept


def test_a_grid_whose_cells_would_adapt_differently_is_refused_naming_the_keys(tmp_path, capsys):
    root = make_folder(tmp_path / "ds", classes=("a", "b"), per_class=500, size=8)  # 900 training images
    args = ["sweep", "--data", root, "--grid", "batch_size=16,64", "--dry-run"]
    assert main(args) == 2  # batch 16 takes 11 epochs to reach 600 steps, batch 64 takes 43
    assert "cnnlab train would adapt epochs, warmup_epochs to it differently" in capsys.readouterr().err
    assert main([*args, "--epochs", "5", "--warmup-epochs", "1"]) == 0
