"""Item 9 of the hardening review: predict and export compare like with like on every machine, and the
bf16 paths run here whatever the CPU (bf16 autocast forced, on small data)."""

import json
import os

import numpy as np
import pytest
from conftest import make_dataset
from PIL import Image

import cnnlab
from cnnlab import device as device_module
from cnnlab.cli import main


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A tiny run trained where `auto` picks bf16 (as on an AMX CPU or a GPU): bf16 autocast, forced."""
    root = make_dataset(tmp_path_factory.mktemp("bf16") / "ds", 20)
    out = str(tmp_path_factory.mktemp("bf16") / "run")
    patch = pytest.MonkeyPatch()
    patch.setattr(device_module, "cpu_has_bf16", lambda: True)
    try:
        cfg = cnnlab.preset("fast", data=root, epochs=2, batch_size=8, eval_batch_size=16, threads=1, progress=False)
        cnnlab.train_run(cfg, out)
        yield out, root, patch
    finally:
        patch.undo()


def _test_files(root):
    test = os.path.join(root, "test")
    return [
        os.path.join(test, c, f) for c in sorted(os.listdir(test)) for f in sorted(os.listdir(os.path.join(test, c)))
    ]


def test_the_run_trained_and_predicts_in_bf16_as_evaluate_does(bf16_run):
    out, root, _ = bf16_run
    saved = json.load(open(os.path.join(out, "config.json")))
    assert saved["data"]["bf16"] is True
    history = json.load(open(os.path.join(out, "history.json")))
    assert all(np.isfinite(r["loss"]) for r in history)
    predictor = cnnlab.load(out)
    assert predictor.bf16
    predicted = predictor.predict(_test_files(root)).argmax(1).tolist()
    assert predicted == json.load(open(os.path.join(out, "metrics.json")))["test_predictions"]


def test_export_is_fp32_and_matches_predict_in_fp32_on_a_bf16_machine(bf16_run, tmp_path):
    import onnxruntime

    out, root, _ = bf16_run
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in _test_files(root)])
    path = str(tmp_path / "model.onnx")
    cnnlab.export(out, path, "onnx")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    exported = session.run(None, {"images": images})[0]
    fp32 = cnnlab.load(out, device="cpu", precision="fp32").predict(images)  # as the export: CPU, fp32 (no TF32)
    bf16 = cnnlab.load(out).predict(images)
    assert np.abs(exported - fp32).max() <= 1e-4
    # bf16 is a different computation: close, not equal
    assert 0 < np.abs(bf16 - fp32).max() < 0.1


def test_cli_predict_precision_flag(bf16_run, capsys):
    out, root, _ = bf16_run
    files = _test_files(root)[:3]
    capsys.readouterr()
    assert main(["predict", out, *files, "--json", "--precision", "fp32", "--top-k", "1"]) == 0
    fp32 = json.loads(capsys.readouterr().out)
    expected = cnnlab.load(out, precision="fp32").predict(files)
    for record, probs in zip(fp32, expected):
        assert record["top"][0]["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
