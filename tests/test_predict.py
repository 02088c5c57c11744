"""Predict and export: same preprocessing as training, same answers as evaluate, ONNX parity."""

import json
import os
import warnings

import numpy as np
import torch
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.runs import load_run


def test_predict_agrees_with_evaluate(cifar_run, cifar_root):
    predictor = cnnlab.load(cifar_run)
    run = load_run(cifar_run)
    # the run's own 1,000 test images: its --subset sample, drawn with its split seed
    assert (run["config"]["subset"], run["config"]["split"], run["config"]["split_seed"]) == (1000, "random", 0)
    test = load_dataset(cifar_root, subset=1000, split="random", seed=0, progress=False).test
    results = predictor.predict_files([os.path.join(cifar_root, "test", f) for f in test.files])
    predicted = [predictor.classes.index(r.top(predictor.classes, 1)[0][0]) for r in results]
    # image by image: the class evaluation gave each test image when the run finished (metrics.json)
    saved = run["metrics"]["test_predictions"]
    assert len(saved) == len(test) == 1000
    assert predicted == saved
    evaluated = cnnlab.evaluate_run(cifar_run)  # and evaluate, run again now, counts the same answers
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (test.labels, predicted), 1)
    assert confusion.tolist() == evaluated["confusion"]
    assert evaluated["accuracy"] == float(np.mean(np.array(predicted) == test.labels))


def test_paths_pil_images_and_arrays_give_the_same_probabilities(cifar_run, cifar_root):
    predictor = cnnlab.load(cifar_run)
    path = os.path.join(cifar_root, "test", "cat", sorted(os.listdir(os.path.join(cifar_root, "test", "cat")))[0])
    array = np.asarray(Image.open(path).convert("RGB"))
    by_path, by_pil, by_array = (predictor.predict(x) for x in (path, Image.open(path), array))
    assert by_path.shape == (1, 10) and abs(by_path.sum() - 1) < 1e-5
    assert np.array_equal(by_path, by_pil) and np.array_equal(by_path, by_array)


def test_cli_predict_reports_bad_files_and_goes_on(cifar_run, cifar_root, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.open(
            os.path.join(cifar_root, "test", "dog", sorted(os.listdir(os.path.join(cifar_root, "test", "dog")))[0])
        ).save(folder / name)
    (folder / "broken.png").write_bytes(b"nope")
    code = main(["predict", cifar_run, str(folder), "--json", "--top-k", "2"])
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert code == 2 and [os.path.basename(r["file"]) for r in rows] == ["a.png", "b.png", "broken.png"]
    assert len(rows[0]["top"]) == 2 and rows[0]["top"] == rows[1]["top"]
    assert "broken.png: cannot read image" in rows[2]["error"] and "broken.png" in captured.err


def test_onnx_matches_pytorch_on_100_cifar_test_images(cifar_run, cifar_root, tmp_path, capsys):
    import onnxruntime

    images = load_dataset(cifar_root, progress=False).test.images[::50][:100]
    out = str(tmp_path / "model.onnx")
    assert main(["export", cifar_run, "--format", "onnx", "--out", out]) == 0
    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    onnx_probs = session.run(None, {"images": images})[0]
    torch_probs = cnnlab.load(cifar_run, device="cpu", precision="fp32").predict(images)
    assert onnx_probs.shape == (100, 10)
    assert np.abs(onnx_probs - torch_probs).max() <= 1e-4
    assert np.array_equal(onnx_probs.argmax(1), torch_probs.argmax(1))


def test_torchscript_export_matches(cifar_run, cifar_root, tmp_path):
    images = load_dataset(cifar_root, progress=False).test.images[:20]
    out = str(tmp_path / "model.pt")
    cnnlab.export(cifar_run, out, "torchscript")
    scripted = torch.jit.load(out)
    assert (
        np.abs(
            scripted(torch.from_numpy(images)).numpy()
            - cnnlab.load(cifar_run, device="cpu", precision="fp32").predict(images)
        ).max()
        <= 1e-4
    )


def test_export_prints_no_warnings(tiny_dataset, tmp_path):
    # the tracer's note on the resize's size test and the ONNX exporter's on constant folding said nothing a
    # user could act on, in 8 lines of stderr after every `cnnlab export`
    run = str(tmp_path / "run")
    cnnlab.train_run(cnnlab.preset("fast", data=tiny_dataset, epochs=1, batch_size=8, threads=1, progress=False), run)
    for fmt in ("onnx", "torchscript"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cnnlab.export(run, str(tmp_path / f"model.{fmt}"), fmt)
        assert [f"{w.category.__name__}: {w.message}" for w in caught] == [], fmt


def test_export_says_what_the_model_takes_and_gives(tiny_dataset, tmp_path, capsys):
    run = str(tmp_path / "run")
    cnnlab.train_run(cnnlab.preset("fast", data=tiny_dataset, epochs=1, batch_size=8, threads=1, progress=False), run)
    out = str(tmp_path / "model.pt")
    assert main(["export", run, "--format", "torchscript", "--out", out]) == 0
    assert capsys.readouterr().out.strip() == (
        f"wrote {out}: input uint8 RGB images (N, 16, 16, 3), output the probabilities (N, 3) of the classes in "
        f"{os.path.join(run, 'config.json')}'s data.classes"
    )
