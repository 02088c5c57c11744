"""Interruptions: SIGKILL or Ctrl-C at a chosen point (a kill point, tests/hooks), then --resume, ends exactly where an
uninterrupted run ends (CPU, fixed seed); damaged checkpoints and non-finite losses are answered."""

import os
import pathlib
import signal
import subprocess
import sys

import pytest
import torch
from conftest import kill_env, make_dataset
from hooks.killpoint import KillPoint
from safetensors.torch import load_file

import cnnlab
from cnnlab.cli import main
from cnnlab.runs import load_run

ARGS = [
    "--epochs",
    "6",
    "--batch-size",
    "8",
    "--eval-batch-size",
    "64",
    "--threads",
    "1",
    "--seed",
    "3",
    "--no-progress",
    "--cutout",
    "4",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("resume") / "ds", 60)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "run")
    assert main(["train", "--data", dataset, "--out", out, *ARGS]) == 0
    return out


def same_result(a, b):
    def strip(history):
        return [{k: v for k, v in r.items() if "time" not in k} for r in history]

    assert strip(load_run(a)["history"]) == strip(load_run(b)["history"])
    wa, wb = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert load_run(a)["metrics"]["test"] == load_run(b)["metrics"]["test"]


def run_killed_at(dataset, out, point):
    """The training run in a process of its own that signals itself at `point` (EPOCH:STEP[:SIGNAL])."""
    env = kill_env(point)
    proc = subprocess.run(
        [sys.executable, "-m", "cnnlab.cli", "train", "--data", dataset, "--out", out, *ARGS],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    "point, resumes_at",
    [
        ("3:7", 3),  # mid-epoch: epoch 3 trains again from its start
        ("2:end", 2),  # after epoch 2 was validated and handed to the callbacks, before its checkpoint
    ],
)
def test_sigkill_then_resume(dataset, reference, tmp_path, point, resumes_at):
    out = str(tmp_path / "run")
    code, err = run_killed_at(dataset, out, point)
    assert code == -signal.SIGKILL, err
    assert not os.path.exists(os.path.join(out, "COMPLETE"))
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert (state["epoch"], state["step"]) == (resumes_at, 0)
    with pytest.raises(cnnlab.CnnlabError, match="incomplete"):
        cnnlab.evaluate_run(out)
    assert main(["train", "--resume", out]) == 0
    same_result(out, reference)
    assert not os.path.exists(os.path.join(out, "checkpoint.pt"))


def test_ctrl_c_checkpoints_mid_epoch_and_resumes(dataset, reference, tmp_path):
    out = str(tmp_path / "run")
    code, err = run_killed_at(dataset, out, "2:9:INT")  # a Ctrl-C during epoch 2's step 9
    assert code == 130, err
    assert f"resume with: cnnlab train --resume {out}" in err and "Traceback" not in err
    assert "SIGINT at epoch 2, step 9; checkpoint saved" in err
    # the checkpoint is where the stop landed, mid-epoch, with its running sums
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert (state["epoch"], state["step"], state["sums"]["seen"]) == (2, 9, 8 * 9)
    assert [r["epoch"] for r in state["history"]] == [1]
    assert main(["train", "--resume", out]) == 0
    same_result(out, reference)


def test_the_kill_point_is_read_as_written():
    for text, point in [("3:7", KillPoint(3, 7, signal.SIGKILL)), ("2:end:int", KillPoint(2, "end", signal.SIGINT))]:
        assert KillPoint.parse(text) == point
    assert KillPoint.parse("2:5:TERM:1") is None  # rank 1's alone: this process is rank 0
    assert KillPoint.parse("2:5:TERM:1", rank=1) == KillPoint(2, 5, signal.SIGTERM)
    for text in ("2-end", "2:x", "2:5:NOPE", "2:5:TERM:x", "2:5:TERM:1:2"):
        with pytest.raises(ValueError, match="expected EPOCH:STEP"):
            KillPoint.parse(text)


def test_the_package_reads_no_test_variable():
    # test-only hooks are installed by the tests (tests/hooks), never looked up in every user's run
    package = pathlib.Path(cnnlab.__file__).parent
    readers = [str(path) for path in package.rglob("*.py") if "CNNLAB_TEST_" in path.read_text()]
    assert not readers


def test_damaged_checkpoint_and_complete_run(dataset, reference, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(open(os.path.join(reference, "config.json")).read())
    (out / "checkpoint.pt").write_bytes(b"garbage, not a checkpoint")
    assert main(["train", "--resume", str(out)]) == 2
    assert "checkpoint.pt: damaged or not a cnnlab checkpoint" in capsys.readouterr().err
    assert main(["train", "--resume", reference]) == 2
    assert "already complete" in capsys.readouterr().err


def test_non_finite_loss_names_epoch_and_step(dataset, tmp_path, capsys):
    code = main(
        [
            "train",
            "--data",
            dataset,
            "--out",
            str(tmp_path / "r"),
            *ARGS,
            "--lr",
            "1e30",
            "--warmup-epochs",
            "0",
            "--schedule",
            "constant",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "non-finite loss" in err and "at epoch 1, step" in err
