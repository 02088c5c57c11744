"""Imbalanced classes: scikit-learn's balanced class weights in the loss, a class-balanced sampler drawn per
(seed, epoch) like the shuffle, the imbalance ratio in `cnnlab data info`, and the adaptation `cnnlab train`
makes on an imbalanced folder (printed, saved, never over a flag the user gave)."""

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import kill_env, make_folder

from cnnlab.adaptation import IMBALANCE_RATIO, adapt_to_imbalance, imbalance_ratio
from cnnlab.cli import main
from cnnlab.data import Augmentation, DeviceLoader, Sampling
from cnnlab.data.loader import balanced_class_weights, class_counts
from cnnlab.presets import preset
from cnnlab.training import TrainingLoss, loss_weights

CPU = torch.device("cpu")
COUNTS = (2000, 200, 20)  # ratio 100


def imbalanced_labels(counts=COUNTS, seed=0) -> np.ndarray:
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels)


def loader(labels, batch=20, augment=Augmentation(flip=True, translate=1), balanced=False, seed=5, shard=(0, 1)):
    images = np.random.default_rng(1).integers(0, 256, (len(labels), 4, 4, 3), dtype=np.uint8)
    sampling = Sampling(shuffle=True, balanced=balanced, drop_last=True, seed=seed, shard=shard)
    return DeviceLoader(images, labels, batch, CPU, augment=augment, sampling=sampling)


def epoch(data: DeviceLoader, number: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data.set_epoch(number)
    return [(inputs.clone(), labels.clone()) for inputs, labels in data.batches(start)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


# --- class weights -------------------------------------------------------------------------------------------


def test_balanced_weights_are_scikit_learns():
    sklearn = pytest.importorskip("sklearn.utils.class_weight")
    for counts in (COUNTS, (7, 7, 7), (1, 30, 4, 9)):
        labels = imbalanced_labels(counts)
        expected = sklearn.compute_class_weight("balanced", classes=np.arange(len(counts)), y=labels)
        assert np.allclose(balanced_class_weights(class_counts(labels, len(counts))), expected, rtol=1e-12)
    # a class without training images weighs nothing (scikit-learn refuses it) and the others are as without it
    assert balanced_class_weights(np.array([10, 0, 30])).tolist() == pytest.approx([2.0, 0.0, 2 / 3])


def test_the_loss_weights_each_image_by_its_class_and_averages_over_images():
    labels = imbalanced_labels()
    data = loader(labels)
    cfg = preset("fast", class_weight="balanced", label_smoothing=0.2)
    weights = loss_weights(cfg, data, 3)
    assert torch.allclose(weights.double(), torch.tensor(balanced_class_weights(np.array(COUNTS))))
    assert loss_weights(cfg.replace(class_weight="none"), data, 3) is None
    assert TrainingLoss.of(cfg, data, 3).class_weight.tolist() == weights.tolist()
    assert TrainingLoss.of(cfg.replace(class_weight="none"), data, 3).class_weight is None


def smoothed_cross_entropy(row: list[float], label: int, smoothing: float) -> float:
    """By hand: -(1 - s) log p[label] - s / K sum_k log p[k], from the log-softmax of `row`."""
    log_z = math.log(sum(math.exp(v) for v in row))
    log_p = [v - log_z for v in row]
    return -(1 - smoothing) * log_p[label] - smoothing / len(row) * sum(log_p)


def test_each_image_loss_is_its_smoothed_loss_times_its_own_class_weight():
    # counts 80, 15, 5 -> balanced weights 100 / (3 x count): 0.417, 2.22, 6.67; smoothing 0.2
    weights = [100 / (3 * c) for c in (80, 15, 5)]
    logits = [[4.0, 0.0, 0.0], [3.0, 1.0, 0.0], [1.0, 2.0, 0.0], [2.0, 0.0, 1.0]]
    labels = [0, 0, 1, 2]
    expected = [weights[y] * smoothed_cross_entropy(row, y, 0.2) for row, y in zip(logits, labels)]
    # the documented loss: two confident majority-class images cost little (torch's weight= gives them
    # 2.40 and 1.79, its smoothing term weighted by the rare classes' weights)
    assert [round(v, 2) for v in expected] == [0.24, 0.21, 1.35, 9.38]
    loss = TrainingLoss(0.2, torch.tensor(weights))
    x, y = torch.tensor(logits), torch.tensor(labels)
    for i in range(4):  # one image: its own loss
        assert loss(x[i : i + 1], y[i : i + 1]).item() == pytest.approx(expected[i], rel=1e-6)
    assert loss(x, y).item() == pytest.approx(sum(expected) / 4, rel=1e-6)  # the mean over the images
    # two equal halves' losses average to the whole batch's (the ranks' under torchrun)
    assert ((loss(x[:2], y[:2]) + loss(x[2:], y[2:])) / 2).item() == pytest.approx(loss(x, y).item(), rel=1e-6)
    # no weights: exactly the unweighted smoothed cross-entropy
    assert torch.equal(TrainingLoss(0.2)(x, y), F.cross_entropy(x, y, label_smoothing=0.2))
    assert loss.name == "cross-entropy, label smoothing 0.2, class-weighted"
    assert TrainingLoss(0.0).name == "cross-entropy"


def test_lr_find_sweeps_the_training_loss_class_weights_included(imbalanced_folder, tmp_path, monkeypatch):
    from cnnlab import lrfind

    used = []

    def find_lr(model, batches, make_optimizer, loss_fn, *args):
        used.append(loss_fn)
        return real_find_lr(model, batches, make_optimizer, loss_fn, *args)

    real_find_lr = lrfind.find_lr
    monkeypatch.setattr(lrfind, "find_lr", find_lr)
    cfg = preset("fast", data=imbalanced_folder, class_weight="balanced", batch_size=9, threads=1, progress=False)
    lrfind.lr_find_run(cfg, str(tmp_path / "lr"), lrfind.LrSweep(steps=2))
    # the training split holds 36, 36 and 9 images (the first 10% of each class validates)
    weights = [81 / (3 * c) for c in (36, 36, 9)]
    logits, labels = [[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]], [2, 0]
    expected = [weights[y] * smoothed_cross_entropy(row, y, 0.2) for row, y in zip(logits, labels)]
    assert used[0](torch.tensor(logits), torch.tensor(labels)).item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    saved = json.load(open(tmp_path / "lr" / "lr_find.json"))
    assert saved["loss"] == "cross-entropy, label smoothing 0.2, class-weighted"


# --- the balanced sampler ------------------------------------------------------------------------------------


def test_balanced_sampler_draws_the_classes_equally_often():
    labels = imbalanced_labels()
    seen = torch.cat([b[1] for b in epoch(loader(labels, balanced=True), 1)])
    assert len(seen) == len(labels) - len(labels) % 20  # the epoch is as long as a uniform one
    frequencies = np.bincount(seen.numpy(), minlength=3)
    # each class 1/3 of 2,220 draws: 740 +- 22 (one standard deviation); 5 deviations of margin
    assert np.all(np.abs(frequencies - 740) < 5 * np.sqrt(2220 / 3 * 2 / 3)), frequencies
    uniform = np.bincount(torch.cat([b[1] for b in epoch(loader(labels), 1)]).numpy(), minlength=3)
    assert uniform[2] <= 20  # without it the smallest class is seen as often as it has images, at most


def test_balanced_order_is_fixed_by_seed_and_epoch_and_resumes_mid_epoch():
    data = loader(imbalanced_labels(), balanced=True)
    whole = epoch(data, 3)
    assert same(epoch(data, 3, 17), whole[17:]) and same(epoch(data, 3, len(whole) - 1), whole[-1:])
    again = loader(imbalanced_labels(), balanced=True)  # a new process: the same batches
    assert same(epoch(again, 3), whole)
    assert not same(epoch(data, 4), whole)
    assert not same(epoch(loader(imbalanced_labels(), balanced=True, seed=6), 3), whole)


@pytest.mark.parametrize("flip_alternate", [False, True])
def test_balanced_ranks_together_get_the_one_process_batches(flip_alternate):
    labels, alternating = imbalanced_labels(), Augmentation(flip=True, flip_alternate=flip_alternate, translate=1)
    whole = epoch(loader(labels, augment=alternating, balanced=True), 2)
    parts = [epoch(loader(labels, augment=alternating, balanced=True, shard=(rank, 2)), 2) for rank in (0, 1)]
    assert same([(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(*parts)], whole)


def test_uniform_order_is_todays_permutation():
    labels = imbalanced_labels()
    data = loader(labels, augment=Augmentation())
    data.set_epoch(2)
    # the order the uniform sampler has always drawn: one randperm from the epoch's generator
    order = torch.randperm(len(labels), generator=data._generator())[: len(data) * 20]
    assert torch.equal(torch.cat([b[1] for b in data.batches()]), torch.from_numpy(labels)[order])


# --- the imbalance ratio and the adaptation ------------------------------------------------------------------


def test_ratio_and_adaptation_above_the_threshold_only():
    cfg = preset("fast")
    assert imbalance_ratio([20, 5, 10]) == 4.0 and imbalance_ratio([3, 0]) == float("inf")
    assert adapt_to_imbalance(cfg, [30, 10, 12]) == (cfg, [])  # ratio 3: not above
    adapted, notes = adapt_to_imbalance(cfg, [250, 10, 40])
    assert adapted == cfg.replace(sampler="balanced")
    assert notes == [
        "imbalanced training set (ratio 25.0): sampler uniform -> balanced; give --class-weight or "
        "--sampler to choose otherwise, or --no-adapt"
    ]
    for keep in ({"class_weight"}, {"sampler"}):  # a choice the user made holds, whatever it is
        assert adapt_to_imbalance(cfg, [250, 10, 40], keep) == (cfg, [])
    weighted = cfg.replace(class_weight="balanced")  # already handled (a config file's choice)
    assert adapt_to_imbalance(weighted, [250, 10, 40]) == (weighted, [])
    assert adapt_to_imbalance(cfg.replace(adapt=False), [250, 10, 40]) == (cfg.replace(adapt=False), [])
    assert IMBALANCE_RATIO == 3.0


@pytest.fixture(scope="module")
def imbalanced_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imb") / "ds"
    make_folder(root / "train", per_class=40, size=16)
    for name in sorted(os.listdir(root / "train" / "c"))[10:]:
        os.remove(root / "train" / "c" / name)  # 40, 40, 10 images: ratio 36 / 9 = 4.0 in the training split
    make_folder(root / "test", per_class=4, size=16, seed=1)
    return str(root)


def test_data_info_prints_the_counts_the_ratio_and_a_warning(imbalanced_folder, capsys):
    assert main(["data", "info", imbalanced_folder, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "images per class (training split): a 36, b 36, c 9" in out
    assert "imbalance ratio (largest / smallest class, training split): 4.0" in out
    assert "warning: imbalanced classes (ratio above 3)" in out and "sets --sampler balanced" in out


def test_data_info_is_quiet_about_a_balanced_folder(tmp_path, capsys):
    make_folder(tmp_path / "ds", per_class=10, size=16)
    assert main(["data", "info", str(tmp_path / "ds"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "imbalance ratio (largest / smallest class, training split): 1.0" in out and "warning" not in out


TINY = ["--epochs", "1", "--batch-size", "9", "--eval-batch-size", "64", "--threads", "1", "--log", "none"]


@pytest.mark.parametrize(
    "flags, chosen, line",
    [
        ([], ("none", "balanced"), True),
        (["--class-weight", "none"], ("none", "uniform"), False),
        (["--sampler", "uniform"], ("none", "uniform"), False),
        (["--class-weight", "balanced"], ("balanced", "uniform"), False),
        (["--no-adapt"], ("none", "uniform"), False),
    ],
)
def test_train_says_what_it_chose_and_keeps_the_users_flags(imbalanced_folder, tmp_path, capsys, flags, chosen, line):
    out = str(tmp_path / "run")
    assert main(["train", "--data", imbalanced_folder, "--out", out, *TINY, *flags]) == 0
    saved = json.load(open(os.path.join(out, "config.json")))
    assert (saved["config"]["class_weight"], saved["config"]["sampler"]) == chosen
    printed = "imbalanced training set (ratio 4.0): sampler uniform -> balanced" in capsys.readouterr().out
    assert printed == line
    assert any("imbalanced training set" in note for note in saved["data"]["notes"]) == line
    shutil.rmtree(out)


def test_stopped_mid_epoch_and_resumed_it_ends_as_an_uninterrupted_run(imbalanced_folder, tmp_path):
    import subprocess
    import sys

    from safetensors.torch import load_file

    args = [
        "--data",
        imbalanced_folder,
        "--epochs",
        "3",
        "--batch-size",
        "9",
        "--eval-batch-size",
        "64",
        "--threads",
        "1",
        "--seed",
        "2",
        "--no-progress",
        "--log",
        "none",
        "--sampler",
        "balanced",
        "--class-weight",
        "balanced",
    ]
    reference, out = str(tmp_path / "ref"), str(tmp_path / "run")
    assert main(["train", "--out", reference, *args]) == 0
    env = kill_env("2:4:INT")  # a Ctrl-C at step 4 of epoch 2 (of 9): checkpointed there
    proc = subprocess.run(
        [sys.executable, "-m", "cnnlab.cli", "train", "--out", out, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 130 and "epoch 2, step 4; checkpoint saved" in proc.stderr, proc.stderr
    assert main(["train", "--resume", out]) == 0

    def strip(history):
        return [{k: v for k, v in r.items() if "time" not in k} for r in history]

    history = [json.load(open(os.path.join(d, "history.json"))) for d in (reference, out)]
    assert strip(history[0]) == strip(history[1])
    weights = [load_file(os.path.join(d, "model.safetensors")) for d in (reference, out)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
