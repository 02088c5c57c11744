"""Interruptions: SIGKILL or Ctrl-C at a random point, then --resume, ends exactly where an
uninterrupted run ends (CPU, fixed seed); damaged checkpoints and non-finite losses are answered."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import cnnlab
from cnnlab.cli import main
from cnnlab.runs import load_run
from conftest import make_dataset

ARGS = ["--epochs", "6", "--batch-size", "8", "--eval-batch-size", "64", "--threads", "1", "--seed", "3",
        "--no-progress", "--cutout", "4"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("resume") / "ds", 60)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "run")
    assert main(["train", "--data", dataset, "--out", out, *ARGS]) == 0
    return out


def same_result(a, b):
    strip = lambda h: [{k: v for k, v in r.items() if "time" not in k} for r in h]  # noqa: E731
    assert strip(load_run(a)["history"]) == strip(load_run(b)["history"])
    wa, wb = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert load_run(a)["metrics"]["test"] == load_run(b)["metrics"]["test"]


def start(dataset, out):
    return subprocess.Popen([sys.executable, "-m", "cnnlab.cli", "train", "--data", dataset, "--out", out, *ARGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc, out):
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(out, "checkpoint.pt")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.02)


def test_sigkill_at_a_random_point_then_resume(dataset, reference, tmp_path):
    out = str(tmp_path / "run")
    proc = start(dataset, out)
    wait_for_checkpoint(proc, out)
    time.sleep(random.uniform(0.0, 0.4))
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(out, "COMPLETE"))
    with pytest.raises(cnnlab.CnnlabError, match="incomplete"):
        cnnlab.evaluate_run(out)
    assert main(["train", "--resume", out]) == 0
    same_result(out, reference)
    assert not os.path.exists(os.path.join(out, "checkpoint.pt"))


def test_ctrl_c_checkpoints_mid_epoch_and_resumes(dataset, reference, tmp_path):
    steps = (180 - 18) // 8  # training images (60 a class less 10% validation) // batch size
    epoch_s = min(r["time_s"] for r in load_run(reference)["history"])  # one epoch's training on this machine
    for attempt in range(10):
        # Ctrl-C at a random point of epoch 2's training (it starts when epoch 1's checkpoint appears); one that
        # lands in the validation or the checkpoint write stops at the epoch's end instead, so try again
        out = str(tmp_path / f"run{attempt}")
        proc = start(dataset, out)
        wait_for_checkpoint(proc, out)
        time.sleep(random.uniform(0.0, 0.8 * epoch_s))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert f"resume with: cnnlab train --resume {out}" in err and "Traceback" not in err
        state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
        if state["step"] > 0:
            break
    # the checkpoint is mid-epoch: some but not all steps of its epoch done, their running sums kept
    assert state["epoch"] >= 2 and 0 < state["step"] < steps, (state["epoch"], state["step"])
    assert f"at epoch {state['epoch']}, step {state['step']}; checkpoint saved" in err
    assert state["sums"]["seen"] == 8 * state["step"] and [r["epoch"] for r in state["history"]] == \
        list(range(1, state["epoch"]))
    assert main(["train", "--resume", out]) == 0
    same_result(out, reference)


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
    code = main(["train", "--data", dataset, "--out", str(tmp_path / "r"), *ARGS, "--lr", "1e30",
                 "--warmup-epochs", "0", "--schedule", "constant"])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite loss" in err and "at epoch 1, step" in err
