"""Workers on a PostgreSQL storage: two workers share one sweep; one is killed with SIGKILL in the
middle of a trial; the sweep completes with every (cell, seed) finished exactly once.

Needs a server: CNNLAB_TEST_POSTGRES=postgresql://user:password@127.0.0.1/db (.ci/run starts one).
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from conftest import SWEEP_FLAGS, make_dataset

from cnnlab.cli import main
from cnnlab.studies import DIED, fail_reason

URL = os.environ.get("CNNLAB_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(not URL, reason="CNNLAB_TEST_POSTGRES not set (.ci/run starts PostgreSQL)")
TINY = SWEEP_FLAGS


def test_two_workers_one_killed_mid_trial(tmp_path):
    root = make_dataset(tmp_path / "ds", 60)
    study = f"test-{uuid.uuid4().hex[:8]}"
    common = [
        "--data",
        str(root),
        "--grid",
        "batch_size=8,16",
        "--grid",
        "epochs=3,5",
        "--seeds",
        "2",
        *TINY,
        "--storage",
        URL,
        "--study",
        study,
    ]
    out = str(tmp_path / "sweep")
    first = subprocess.Popen(
        [sys.executable, "-m", "cnnlab.cli", "sweep", *common, "--out", out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(out, "sweep.json")):
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cnnlab.cli",
            "sweep",
            "--worker",
            "--storage",
            URL,
            "--study",
            study,
            "--out",
            out,
            "--threads",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def second_is_mid_trial():
        for t in optuna.load_study(study_name=study, storage=URL).get_trials():
            if (
                t.state == optuna.trial.TrialState.RUNNING
                and t.user_attrs.get("pid") == second.pid
                and os.path.exists(os.path.join(out, "runs", t.user_attrs["run"], "checkpoint.pt"))
            ):
                return True
        return False

    while not second_is_mid_trial():
        assert time.time() < deadline and second.poll() is None, "the second worker never got a trial"
        time.sleep(0.05)
    second.send_signal(signal.SIGKILL)  # dies in the middle of its trial
    second.wait()
    assert first.wait(timeout=300) == 0, first.stderr.read()
    # the same command again: nothing left to train, the table comes from the database
    assert main(["sweep", *common, "--out", out]) == 0
    trials = optuna.load_study(study_name=study, storage=URL).get_trials()
    done = {}
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            key = (t.user_attrs["cell"], t.user_attrs["seed"])
            done[key] = done.get(key, 0) + 1
    assert len(done) == 8 and set(done.values()) == {1}
    assert any(t.state == optuna.trial.TrialState.FAIL and fail_reason(t) == DIED for t in trials)
    rows = json.load(open(os.path.join(out, "results.json")))["rows"]
    assert [r["val"]["n"] for r in rows] == [2, 2, 2, 2]
    # the same sweep by one worker on a journal file gives the same table
    local = str(tmp_path / "local")
    assert main(["sweep", *[a for a in common if a not in (URL, "--storage", "--study", study)], "--out", local]) == 0

    def table(folder):
        return [(r["cell"], r["val"], r["test"]) for r in json.load(open(os.path.join(folder, "results.json")))["rows"]]

    assert table(local) == table(out)
