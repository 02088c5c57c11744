"""Training end to end: determinism, the run directory, evaluate, and a smoke test on real CIFAR-10."""

import json
import os

import pytest
from conftest import make_dataset
from safetensors.torch import load_file

from cnnlab import evaluate_run, preset, train_run
from cnnlab.runs import load_run

TINY = dict(epochs=2, batch_size=16, eval_batch_size=32, progress=False, threads=1)


def test_same_seed_same_history_and_weights(tiny_dataset, tmp_path):
    cfg = preset("fast", data=tiny_dataset, seed=5, cutout=3, **TINY)
    first = train_run(cfg, str(tmp_path / "a"))
    second = train_run(cfg, str(tmp_path / "b"))
    other = train_run(cfg.replace(seed=6), str(tmp_path / "c"))
    history = [load_run(str(tmp_path / n))["history"] for n in "abc"]

    def strip(history):
        return [{k: v for k, v in r.items() if "time" not in k} for r in history]

    assert strip(history[0]) == strip(history[1]) and strip(history[0]) != strip(history[2])
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert first["test"] == second["test"] and other["test"] != first["test"]


def test_run_directory_holds_everything(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    metrics = train_run(preset("fast", data=tiny_dataset, **TINY), str(out))
    names = set(os.listdir(out))
    assert {
        "config.json",
        "history.json",
        "history.csv",
        "metrics.json",
        "model.safetensors",
        "COMPLETE",
        "acc_plot.jpg",
        "acc_plot.png",
        "loss_plot.jpg",
        "loss_plot.png",
    } <= names
    saved = json.loads((out / "config.json").read_text())
    assert saved["seed"] == 0 and saved["config"]["epochs"] == 2 and saved["environment"]["torch"]
    assert saved["data"]["classes"] == ["a", "b", "c"] and saved["data"]["sizes"]["training"] == 54
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert (out / "history.csv").read_text().splitlines()[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy")
    test = metrics["test"]
    assert sum(map(sum, test["confusion"])) == 30 and set(test["per_class_accuracy"]) == {"a", "b", "c"}
    assert evaluate_run(str(out))["accuracy"] == test["accuracy"]


RECORD_KEYS = {
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_nll",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_macro_f1",
    "val_ece",
    "val_brier",
    "lr",
    "time_s",
    "eval_time_s",
    "loss_name",
}


def check_record(record, epoch, top5: bool = False):
    """One epoch's history record: its keys (val_top5_accuracy with more than 5 classes), and each value
    where it can lie."""
    assert set(record) == RECORD_KEYS | ({"val_top5_accuracy"} if top5 else set()) and record["epoch"] == epoch
    assert 0.0 < record["loss"] < 20 and 0.0 < record["val_loss"] < 20 and 0.0 < record["val_nll"] < 20
    assert 0.0 <= record["accuracy"] <= 1.0 and 0.0 <= record["val_accuracy"] <= 1.0
    assert 0.0 <= record["val_ece"] <= 1.0 and 0.0 <= record["val_brier"] <= 2.0
    assert 0.0 <= record["val_balanced_accuracy"] <= 1.0 and 0.0 <= record["val_macro_f1"] <= 1.0
    if top5:
        assert record["val_accuracy"] <= record["val_top5_accuracy"] <= 1.0
    assert record["time_s"] >= 0 and record["eval_time_s"] >= 0


@pytest.mark.learned  # fp32: the same figures on every CPU
def test_history_has_one_record_per_epoch_and_learns_separable_data(tmp_path):
    # three classes told apart by colour alone (conftest.make_folder): chance is 1/3, a working loop gets ~all
    # (with 40 images a class; with 20, 12 steps leave BatchNorm's running statistics too far behind)
    cfg = preset("fast", data=make_dataset(tmp_path / "ds", 40), **{**TINY, "epochs": 4, "precision": "fp32"})
    metrics = train_run(cfg, str(tmp_path / "run"))
    history = load_run(str(tmp_path / "run"))["history"]
    assert len(history) == 4
    steps = 108 // 16  # 108 training images (120 less 10% validation), batch 16, the last partial batch dropped
    total, warmup = 4 * steps, round(cfg.warmup_epochs * steps)
    for epoch, record in enumerate(history, 1):
        check_record(record, epoch)
        done = epoch * steps  # the one-cycle rate after the epoch's last step: up over warm-up, then down to 0
        factor = (done + 1) / warmup if done < warmup else (total - done) / (total - warmup)
        assert record["lr"] == pytest.approx(cfg.lr * factor)
    assert history[-1]["lr"] == 0.0
    assert history[-1]["loss"] < 0.8 * history[0]["loss"] and history[-1]["val_nll"] < 0.8 * history[0]["val_nll"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]  # smoothed 0.2: its floor for 3 classes is 0.49
    assert history[-1]["val_accuracy"] >= 0.8 and metrics["test"]["accuracy"] >= 0.8  # chance: 1/3


@pytest.mark.learned  # fp32: the same figure on every CPU (in bf16, emulated, this took 20 minutes on an AVX2 EPYC)
def test_fast_preset_learns_real_cifar10(cifar_root, tmp_path):
    cfg = preset("fast", data=cifar_root, subset=3000, epochs=4, batch_size=128, progress=False, precision="fp32")
    metrics = train_run(cfg, str(tmp_path / "run"))
    assert metrics["test"]["n"] == 3000
    assert metrics["test"]["accuracy"] >= 0.30  # chance is 0.10


def test_seed_preset_trains_on_a_subset(cifar_root, tmp_path):
    cfg = preset("seed", data=cifar_root, subset=100, epochs=1, progress=False)
    metrics = train_run(cfg, str(tmp_path / "run"))
    history = load_run(str(tmp_path / "run"))["history"]
    assert len(history) == 1
    check_record(history[0], 1, top5=True)
    assert history[0]["lr"] == 1e-3  # Adam at a constant rate, as the study
    assert metrics["test"]["n"] == 100 and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    with pytest.raises(Exception, match="does not accept 32x32 inputs"):
        train_run(cfg.replace(input_size=32), str(tmp_path / "small"))


def tiny_training(cfg, labels=None):
    """A small convolutional model trained by `train` on 64 random 8x8 images (96 with the 32 validation
    ones; `labels` of all 96, random in 0..2 by default): (history, model, training loader, validation loader)."""
    import numpy as np
    import torch
    import torch.nn as nn

    from cnnlab.data import Augmentation, DeviceLoader, Sampling
    from cnnlab.training import train

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (96, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 96) if labels is None else labels
    cpu = torch.device("cpu")
    train_loader = DeviceLoader(
        images[:64],
        labels[:64],
        8,
        cpu,
        augment=Augmentation(flip=True),
        sampling=Sampling(shuffle=True, drop_last=True, seed=1),
    )
    val_loader = DeviceLoader(images[64:], labels[64:], 16, cpu)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    history = train(model, train_loader, val_loader, cfg, ["a", "b", "c"])
    return history, model, train_loader, val_loader


def test_validation_is_evaluated_as_the_test_split_is():
    # sweeps and searches choose on val figures and report test ones: both under the config's one TTA
    # (flip + 1-pixel translations here, the fast preset's), so the history's val figures are those of
    # evaluate() with the test's arguments on the trained model
    from cnnlab.evaluation import TestTimeAugmentation, evaluate

    cfg = preset("fast", epochs=2, batch_size=8, lr=0.05, progress=False, threads=1, tta=True, tta_translate=1)
    history, model, _, val_loader = tiny_training(cfg)
    as_test = evaluate(model, val_loader, ["a", "b", "c"], False, TestTimeAugmentation.of(cfg))
    assert (history[-1]["val_nll"], history[-1]["val_accuracy"]) == (as_test["loss"], as_test["accuracy"])
    flip_only = evaluate(model, val_loader, ["a", "b", "c"], False, TestTimeAugmentation(flip=True))
    assert flip_only["loss"] != as_test["loss"]  # the two TTAs tell apart: the check above can fail


def test_val_loss_is_the_training_loss_and_val_nll_the_plain_cross_entropy():
    # like with like in the curves: val_loss is the loss training minimises (label smoothing 0.2, the
    # training split's class weights), as Keras computes both with the compiled loss; val_nll stays plain
    import numpy as np
    import torch
    import torch.nn.functional as F

    from cnnlab.evaluation import TestTimeAugmentation, predict_batches
    from cnnlab.training import TrainingLoss

    labels = np.random.default_rng(1).choice(3, 96, p=[0.6, 0.3, 0.1])  # imbalanced: the weights matter
    cfg = preset("fast", epochs=2, batch_size=8, lr=0.05, progress=False, threads=1, class_weight="balanced")
    history, model, train_loader, val_loader = tiny_training(cfg, labels)
    counts = np.bincount(labels[:64], minlength=3)
    weights = torch.tensor(64 / (3 * counts), dtype=torch.float32)  # scikit-learn's balanced, training split
    logits, val_labels = predict_batches(model, val_loader, False, TestTimeAugmentation.of(cfg))
    log_p = logits.double().log_softmax(1)
    per_image = -(0.8 * log_p[torch.arange(len(val_labels)), val_labels] + 0.2 / 3 * log_p.sum(1))
    expected = (weights.double()[val_labels] * per_image).mean().item()
    assert history[-1]["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert history[-1]["val_loss"] == TrainingLoss.of(cfg, train_loader, 3)(logits, val_labels).item()
    assert history[-1]["val_nll"] == F.cross_entropy(logits, val_labels).item()
    assert abs(history[-1]["val_loss"] - history[-1]["val_nll"]) > 0.01  # the two differ: the checks can fail
    assert [r["loss_name"] for r in history] == ["cross-entropy, label smoothing 0.2, class-weighted"] * 2
