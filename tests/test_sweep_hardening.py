"""Sweeps and searches against hostile input: secrets in storage URLs, hostile grid values,
no validation split, failures without a reason, repeated TPE proposals, skewed clocks, comparisons
with the best, reports of a search."""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from conftest import SWEEP_FLAGS, make_dataset

from cnnlab import preset
from cnnlab.cli import main
from cnnlab.errors import ConfigError

PASSWORD = "Xq7hunter2Secret"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("hardening") / "ds", 20)


def run_cli(args, timeout=300, env=None, cwd=None):
    """`cnnlab ARGS` in a child process (a hang fails the test instead of hanging the suite)."""
    return subprocess.run(
        [sys.executable, "-m", "cnnlab.cli", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


# --- storage URLs: the password is never shown -------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://alice:{PASSWORD}@127.0.0.1:1/nothing",  # nothing listens on port 1
        f"postgresql//alice:{PASSWORD}@127.0.0.1/nothing",  # not a URL SQLAlchemy can parse
    ],
)
def test_a_bad_storage_url_is_reported_without_its_password(url, tmp_path):
    proc = run_cli(["sweep", "--grid", "lr=0.1,0.2", "--storage", url, "--out", str(tmp_path / "sw"), "--no-progress"])
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "alice:***@127.0.0.1" in errors[0], errors[0]
    assert PASSWORD not in proc.stderr + proc.stdout
    for path in pathlib.Path(tmp_path).rglob("*"):
        assert not path.is_file() or PASSWORD.encode() not in path.read_bytes(), path


def test_redact_url():
    from cnnlab.tracking import redact

    def redact_url(url):
        return redact(url, url)

    assert (
        redact_url(f"postgresql://bob:{PASSWORD}@db.example:5433/sweeps")
        == "postgresql://bob:***@db.example:5433/sweeps"
    )
    assert redact_url("postgresql://bob@db/sweeps") == "postgresql://bob@db/sweeps"  # PGPASSWORD / .pgpass
    assert redact_url("postgresql://bob:p%40ss%2Fw@db/x") == "postgresql://bob:***@db/x"
    assert redact_url(f"not a url bob:{PASSWORD}@db") == "not a url bob:***@db"
    assert redact_url("postgresql://bob:p@ss@db/x") == "postgresql://bob:***@db/x"  # '@' in the password
    # a driver's message quoting the password decoded, outside any URL
    assert redact("password 'p@ss/w' refused", "postgresql://bob:p%40ss%2Fw@db/x") == "password '***' refused"


# --- hostile grid values ---------------------------------------------------------------------


def test_hostile_grid_values_stay_inside_the_sweep_directory(dataset, tmp_path, monkeypatch):
    """String values may be paths: `../` and `/` in them, and a 250-character folder name, must name no
    directory outside SWEEP_DIR/runs/ (nor fail on the file-name limit), and still work as values. (`data`
    itself is never a grid key: it changes the validation images; `mlflow_uri`, unused without --log
    mlflow, takes any string.)"""
    long_name = "y" * 250
    cwd = tmp_path / "a" / "b" / "c" / "d"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    escaping = "../../../../ds"  # a path to tmp_path/ds; as a file name it climbed out of the sweep
    grid = f"mlflow_uri={escaping},{tmp_path / long_name}"
    args = ["sweep", "--data", dataset, "--grid", grid, "--seeds", "1", "--epochs", "1", "--out", "sweep"]
    assert main([*args, "--log", "none", *SWEEP_FLAGS]) == 0
    assert sorted(os.listdir(cwd)) == ["sweep"]
    assert set(os.listdir(tmp_path)) == {"a"}
    runs_dir = cwd / "sweep" / "runs"
    names = sorted(os.listdir(runs_dir))
    dirs = [n for n in names if (runs_dir / n).is_dir()]
    assert len(dirs) == 2
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9._=+-]{1,100}", name) and ".." not in name, name
    res = json.load(open(cwd / "sweep" / "results.json"))
    assert [r["val"]["n"] for r in res["rows"]] == [1, 1]  # both values trained
    # the values stay readable beside the directories, exactly as given
    recorded = sorted(json.load(open(runs_dir / f"{d}.json"))["values"]["mlflow_uri"] for d in dirs)
    assert recorded == sorted([escaping, str(tmp_path / long_name)])
    assert main([*args, "--log", "none", *SWEEP_FLAGS]) == 0  # resumes: nothing left, nothing created elsewhere
    assert sorted(os.listdir(runs_dir)) == names and set(os.listdir(tmp_path)) == {"a"}


# --- no validation split; every failure has a reason; bounded retries ---------------------------


@pytest.mark.parametrize(
    "extra",
    [
        ["--grid", "lr=0.05,0.1", "--val-fraction", "0"],
        ["--grid", "val_fraction=0,0.1"],
        ["--search", "tpe", "--trials", "2", "--param", "lr=0.01..0.1", "--val-fraction", "0"],
        ["--search", "tpe", "--trials", "2", "--param", "val_fraction=0.0..0.2"],
    ],
)
def test_a_sweep_without_a_validation_split_is_refused_up_front(extra, dataset, tmp_path):
    out = tmp_path / "sw"
    proc = run_cli(
        ["sweep", "--data", dataset, *extra, "--seeds", "1", "--epochs", "1", "--out", str(out), *SWEEP_FLAGS],
        timeout=int(os.environ.get("T_REFUSE", 120)),
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "val_fraction" in proc.stderr and "validation" in proc.stderr, proc.stderr
    assert not out.exists() or not os.listdir(out / "runs")


# --- keys that change the images: never a grid or search dimension ------------------------------


@pytest.mark.parametrize(
    "extra, key",
    [
        (["--grid", "val_fraction=0.1,0.2"], "val_fraction"),
        (["--search", "tpe", "--trials", "2", "--param", "split=keras,random"], "split"),
    ],
)
def test_a_sweep_or_search_over_the_validation_images_is_refused_in_one_line(extra, key, dataset, tmp_path):
    out = tmp_path / "sw"
    proc = run_cli(["sweep", "--data", dataset, *extra, "--seeds", "1", "--out", str(out), *SWEEP_FLAGS], timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"config key {key!r} changes which images are trained and validated on" in proc.stderr, proc.stderr
    assert "run a separate" in proc.stderr and not out.exists()


@pytest.mark.parametrize("key", ["data", "val_fraction", "split", "split_seed", "subset", "skip_bad_images"])
def test_every_key_that_changes_the_images_is_refused_by_grids_and_searches(key, tmp_path):
    from cnnlab.search import parse_space, run_search
    from cnnlab.sweep import create_sweep, parse_grid

    base = preset("fast", data=str(tmp_path))
    values = {"data": "x,y", "val_fraction": "0.1,0.2", "split": "keras,random", "skip_bad_images": "true,false"}
    spec = f"{key}={values.get(key, '1,2')}"
    message = f"config key {key!r} changes which images are trained and validated on"
    with pytest.raises(ConfigError, match=message):
        parse_grid([spec], base)
    with pytest.raises(ConfigError, match=message):
        parse_space([spec], base)
    with pytest.raises(ConfigError, match=message):  # the library's entry points too
        create_sweep(str(tmp_path / "sw"), base, {key: [getattr(base, key)] * 2}, 1)
    with pytest.raises(ConfigError, match=message):
        run_search(str(tmp_path / "se"), base, {key: {"kind": "choice", "values": [getattr(base, key)]}}, 1)
    assert not os.path.exists(tmp_path / "sw") and not os.path.exists(tmp_path / "se")


def _sweep_study(tmp_path, grid, seeds=1, folds=0):
    from cnnlab.studies import open_study
    from cnnlab.sweep import create_sweep, plan

    out = str(tmp_path / "sw")
    base = preset("fast", data=str(tmp_path), folds=folds)
    create_sweep(out, base, grid, seeds)
    units, _ = plan(base, grid, seeds)
    return out, open_study(out), units


def test_a_failure_without_a_reason_is_retried_a_bounded_number_of_times(tmp_path):
    from cnnlab.studies import claim
    from cnnlab.sweep import format_table, results
    from cnnlab.sweep.running import pick_unit

    out, study, units = _sweep_study(tmp_path, {"lr": [0.1]})
    attempts = 0
    while claim(out, study, lambda: pick_unit(study, units)) is not None:
        claimed = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING]
        for trial in claimed:  # ends FAIL with no fail_reason (as Optuna does with a value of None)
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        attempts += 1
        assert attempts <= 5, "a unit failing the same way is retried forever"
    assert attempts == 3
    res = results(out)
    assert len(res["failed"]) == 1 and res["failed"][0]["cell"] == "lr=0.1"
    assert "3 times" in res["failed"][0]["reason"]
    assert "failed: lr=0.1 seed 0: " in format_table(res)


def test_a_trial_told_no_validation_accuracy_fails_with_its_reason(tmp_path, monkeypatch):
    from cnnlab.studies import open_study
    from cnnlab.sweep import running

    out, study, units = _sweep_study(tmp_path, {"lr": [0.1]})
    calls = []

    def no_validation(*args, **kwargs):
        calls.append(1)
        if len(calls) > 4:
            raise RuntimeError("the unit is retrained forever")
        return [{"epoch": e, "val_accuracy": None, "time_s": 1.0} for e in range(1, units[0].serves[-1] + 1)]

    monkeypatch.setattr(running, "_train_unit", no_validation)
    running.work(out, progress=False)  # returns: the unit is not trained again and again
    trials = open_study(out).get_trials()
    assert len(calls) == 1 and [t.state for t in trials] == [optuna.trial.TrialState.FAIL]
    assert "no validation accuracy" in trials[0].user_attrs["fail_reason"]


# --- TPE proposals ---------------------------------------------------------------------------


def test_resumed_and_parallel_tpe_searches_do_not_repeat_proposals(tmp_path):
    from cnnlab.search import _open, parse_space, suggest

    base = preset("fast", seed=3)
    space = parse_space(["lr=0.001..0.1:log", "momentum=0.5..0.99"], base)
    out = str(tmp_path / "search")
    os.makedirs(out)
    proposals = []
    for _ in range(3):  # three sessions of the same search, each asking two trials (a resume each time)
        study = _open(out, base, None, "cnnlab")
        for _ in range(2):
            trial = study.ask()
            proposals.append(tuple(suggest(trial, space).values()))
            study.tell(trial, 0.5)
    assert len(set(proposals)) == 6, proposals
    # two workers that open the study at once and ask one after the other
    out2 = str(tmp_path / "parallel")
    os.makedirs(out2)
    first, second = _open(out2, base, None, "cnnlab"), _open(out2, base, None, "cnnlab")
    a, b = first.ask(), second.ask()
    assert suggest(a, space) != suggest(b, space)
    # the same search from scratch proposes the same (reproducible)
    again = str(tmp_path / "again")
    os.makedirs(again)
    study = _open(again, base, None, "cnnlab")
    repeat = []
    for _ in range(2):
        trial = study.ask()
        repeat.append(tuple(suggest(trial, space).values()))
        study.tell(trial, 0.5)
    assert repeat == proposals[:2]


# --- comparisons with the best ----------------------------------------------------------------


def _known_trials(study, values: dict, folds: int = 0) -> None:
    import optuna

    for batch, vals in values.items():
        for i, v in enumerate(vals):
            attrs = {"cell": f"batch_size={batch}", "seed": i // max(folds, 1), "epochs": 1, "test_accuracy": v}
            if folds:
                attrs["fold"] = i % folds
            study.add_trial(optuna.trial.create_trial(value=v, user_attrs={**attrs, "train_time_s": 1.0}))


def test_sweep_verdicts_account_for_choosing_the_best(tmp_path):
    # 9 cells x 10 seeds, all drawn from one distribution (no cell is truly worse). The earlier verdicts
    # (Welch's test of the best against each other cell on the same numbers, Holm over the 8) called a
    # cell worse here (p=0.024), not counting that the best was picked as the largest of 9 means.
    from cnnlab.sweep import results

    rng = np.random.default_rng(22)
    values = {b: list(0.88 + rng.normal(0, 0.01, 10)) for b in range(8, 17)}
    out, study, _ = _sweep_study(tmp_path, {"batch_size": list(values)}, seeds=10)
    _known_trials(study, values)
    rows = results(out)["rows"]
    assert sum(r["verdict"].startswith("best") for r in rows) == 1
    assert not [r["cell"] for r in rows if r["verdict"].startswith("worse")]
    assert min(r["p_value"] for r in rows if r["p_value"] is not None) > 0.1


def test_sweep_verdicts_name_the_procedure_and_adjusted_p_values(tmp_path):
    from cnnlab.sweep import format_table, results, save_results

    values = {8: [0.90, 0.93, 0.90], 16: [0.80, 0.82, 0.84], 32: [0.88, 0.86, 0.885], 64: [0.89, 0.90, 0.88]}
    out, study, _ = _sweep_study(tmp_path, {"batch_size": list(values)}, seeds=3)
    _known_trials(study, values)
    res = results(out)
    rows = {r["cell"]: r for r in res["rows"]}
    assert rows["batch_size=8"]["verdict"] == "best (on validation)"
    assert rows["batch_size=16"]["verdict"].startswith("worse than best (adj. p=0.0")
    assert rows["batch_size=32"]["verdict"].startswith("not distinguishable from best (adj. p=")
    assert rows["batch_size=32"]["p_unadjusted"] < 0.05 < rows["batch_size=32"]["p_value"]
    assert rows["batch_size=8"]["units"] == [[0, 0], [1, 0], [2, 0]]
    table = format_table(res)
    assert "adj. p: each cell against the best on validation accuracy, adjusted for choosing the best" in table
    assert "paired on the 3 seeds the cells share" in table
    save_results(out, res)
    header = open(os.path.join(out, "results.csv")).readline().strip().split(",")
    assert {"p_value_vs_best_adjusted", "p_value_vs_best_unadjusted", "comparison"} <= set(header)


def test_k_fold_sweep_verdicts_pair_on_folds_and_correct_for_their_overlap(tmp_path):
    from cnnlab.sweep import results

    rng = np.random.default_rng(0)
    values = {b: list(rng.normal(0.9 - 0.001 * b, 0.01, 6)) for b in (8, 16)}  # 3 folds x 2 seeds
    out, study, _ = _sweep_study(tmp_path, {"batch_size": list(values)}, seeds=2, folds=3)
    _known_trials(study, values, folds=3)
    method = results(out)["comparison"]["method"]
    assert "paired on the 3 folds" in method and "Nadeau-Bengio: 1/n + 0.5" in method


# --- liveness by the database's clock ---------------------------------------------------------


def test_liveness_uses_the_database_clock_not_the_workers(tmp_path, monkeypatch):
    from cnnlab.studies import DIED, Heartbeat, claim, fail_dead_trials, fail_reason, open_study
    from cnnlab.sweep import create_sweep, plan
    from cnnlab.sweep.running import pick_unit

    url = f"sqlite:///{tmp_path / 'study.db'}"
    out = str(tmp_path / "sw")
    base = preset("fast", data=str(tmp_path))
    create_sweep(out, base, {"lr": [0.1, 0.2]}, 1, storage=url)
    units, _ = plan(base, {"lr": [0.1, 0.2]}, 1)
    study = open_study(out, url)
    real_time = time.time
    with monkeypatch.context() as worker:  # a worker on another machine whose clock is an hour behind
        worker.setattr(socket, "gethostname", lambda: "other-machine")
        worker.setattr(time, "time", lambda: real_time() - 3600)
        for _ in units:
            Heartbeat(study, claim(out, study, lambda: pick_unit(study, units)).trials).beat()
    running = open_study(out, url).get_trials()
    assert all(re.fullmatch(r"[0-9a-f]{32}", t.user_attrs["worker"]) for t in running)  # not host@pid
    fail_dead_trials(open_study(out, url))
    states = [t.state for t in open_study(out, url).get_trials()]
    assert states == [optuna.trial.TrialState.RUNNING] * 2  # its heartbeat is recent by the database's clock
    # the first trial's worker falls silent: 2 minutes without a heartbeat, by the database's clock
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-120 seconds') WHERE trial_id = "
                "(SELECT MIN(trial_id) FROM trials)"
            )
        )
    fail_dead_trials(open_study(out, url))
    trials = open_study(out, url).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING]
    assert fail_reason(trials[0]) == DIED


# --- cnnlab report on a TPE search ----------------------------------------------------------


def test_report_of_a_tpe_search(dataset, tmp_path):
    from cnnlab.report import build_report

    out = str(tmp_path / "search")
    assert (
        main(
            [
                "sweep",
                "--search",
                "tpe",
                "--trials",
                "3",
                "--param",
                "lr=0.01..0.2:log",
                "--data",
                dataset,
                "--epochs",
                "2",
                "--out",
                out,
                *SWEEP_FLAGS,
            ]
        )
        == 0
    )
    res = json.load(open(os.path.join(out, "results.json")))
    md_path, html_path = build_report(out)
    md = pathlib.Path(md_path).read_text()
    assert "# cnnlab search report" in md and "## Trials" in md
    for row in res["rows"]:
        assert re.search(
            rf"\| {row['trial']} \| {row['state']} \| lr={row['params']['lr']:.4g} \| "
            rf"{100 * row['val_accuracy']:.2f}% \|",
            md,
        ), md
    best = res["best"]
    assert (
        f"Chosen on validation accuracy: **trial {best['trial']}** (lr={best['params']['lr']:.4g}), "
        f"{100 * best['val_accuracy']:.2f}%"
    ) in md
    assert f"its test accuracy: {100 * best['test_accuracy']:.2f}%" in md
    assert "report_files/chosen_acc_plot.png" in md and "report_files/chosen_loss_plot.png" in md
    page = pathlib.Path(html_path).read_text()
    assert page.count('src="data:image/png;base64,') == 2
