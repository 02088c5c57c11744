"""A trained run's temperature: fitted on validation at the end of training, saved, and applied by
evaluate, predict and export alike; none with --no-calibrate or without a validation split."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import make_dataset

import cnnlab
from cnnlab import load_dataset, runs
from cnnlab.calibration import figures
from cnnlab.cli import main

TINY = ["--batch-size", "8", "--epochs", "1", "--threads", "1", "--no-progress", "--eval-batch-size", "64"]


def test_a_run_is_calibrated_on_validation_and_predict_applies_it(cifar_run, cifar_root):
    metrics = runs.load_run(cifar_run)["metrics"]
    fitted, test = metrics["calibration"], metrics["test"]
    assert fitted["fitted_on"] == "validation" and fitted["n"] == 1000  # --subset: at most 1,000 images of each split
    t = fitted["temperature"]
    assert 0.05 <= t <= 20 and t != pytest.approx(1.0, abs=1e-3)
    assert fitted["validation"]["calibrated"]["nll"] <= fitted["validation"]["raw"]["nll"]
    assert test["calibrated"]["temperature"] == t
    # predict's probabilities, in the run's own precision and batches, are evaluate's calibrated ones
    images = load_dataset(cifar_root, subset=1000, progress=False).test.images
    probabilities = cnnlab.load(cifar_run).predict(images)
    labels = torch.from_numpy(load_dataset(cifar_root, subset=1000, progress=False).test.labels).long()
    log_p = torch.from_numpy(np.log(probabilities)).double()
    assert float(torch.nn.functional.nll_loss(log_p, labels)) == pytest.approx(test["calibrated"]["nll"], abs=1e-5)
    assert (probabilities.argmax(1) == metrics["test_predictions"]).all()  # calibration moves no prediction
    raw = cnnlab.load(cifar_run, calibrated=False).predict(images[:50])
    from_raw = torch.softmax(torch.from_numpy(np.log(raw)).double() / t, 1).numpy()
    assert np.abs(from_raw - probabilities[:50]).max() < 1e-5


def test_exported_onnx_gives_the_calibrated_probabilities(cifar_run, cifar_root, tmp_path):
    import onnxruntime

    images = load_dataset(cifar_root, progress=False).test.images[:64]
    out = str(tmp_path / "model.onnx")
    assert main(["export", cifar_run, "--format", "onnx", "--out", out]) == 0
    onnx_probs = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"images": images})[0]
    calibrated = cnnlab.load(cifar_run, device="cpu", precision="fp32").predict(images)
    raw = cnnlab.load(cifar_run, device="cpu", precision="fp32", calibrated=False).predict(images)
    assert np.abs(onnx_probs - calibrated).max() < 1e-5
    assert np.abs(onnx_probs - raw).max() > 1e-3  # the graph divides the logits by the temperature


def test_evaluate_prints_calibration_before_and_after(cifar_run, capsys):
    assert main(["evaluate", cifar_run]) == 0
    out = capsys.readouterr().out
    assert "calibration (raw probabilities): ECE " in out and "calibrated (temperature " in out


@pytest.mark.parametrize(
    "flags, reason",
    [(["--no-calibrate"], "--no-calibrate"), (["--val-fraction", "0"], "no validation split to fit a temperature on")],
)
def test_no_temperature_without_calibration_or_validation(tmp_path, capsys, flags, reason):
    data = make_dataset(tmp_path / "ds", 10, 4)
    out = str(tmp_path / "run")
    assert main(["train", "--data", data, "--out", out, *TINY, "--log", "none", *flags]) == 0
    metrics = json.loads(open(os.path.join(out, "metrics.json")).read())
    assert metrics["calibration"] == {"temperature": None, "reason": reason}
    assert "calibrated" not in metrics["test"] and "ece" in metrics["test"]
    assert cnnlab.load(out).temperature == 1.0


def test_temperature_scaling_keeps_the_accuracy_of_made_up_logits():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(500, 7, generator=g) * 5, torch.randint(0, 7, (500,), generator=g)
    for t in (0.3, 1.0, 4.0):
        assert torch.equal((logits / t).argmax(1), logits.argmax(1))
        assert figures(logits, labels, t).temperature == t
