"""early_size / early_epochs: the run's first steps fed smaller inputs (progressive resizing), every draw as
without them, evaluation always at the input size."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab import pipeline, preset, train_run
from cnnlab.adaptation import adapt_to_dataset
from cnnlab.cli import main
from cnnlab.data import Augmentation, DeviceLoader, Feed, Sampling

CPU = torch.device("cpu")
AUGMENT = Augmentation(flip=True, flip_alternate=True, translate=2, cutout=3, brightness=0.2, contrast=0.1)


def loader(augment=AUGMENT, n=40, size=12, batch_size=8, feed=Feed([0.5] * 3, [0.25] * 3)):
    images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    sampling = Sampling(shuffle=True, drop_last=True, seed=3)
    return DeviceLoader(images, np.arange(n) % 4, batch_size, CPU, feed=feed, augment=augment, sampling=sampling)


def epoch_batches(data, epoch, start_step=0):
    data.set_epoch(epoch)
    return list(data.batches(start_step))


def test_the_first_early_epochs_are_the_plain_batches_downscaled_and_the_rest_unchanged():
    plain = loader()
    early = loader(dataclasses.replace(AUGMENT, early_size=8, early_epochs=1.4))  # 5 steps an epoch: 7 early
    shapes = []
    for epoch in (1, 2, 3):
        for (x, y), (u, v) in zip(epoch_batches(plain, epoch), epoch_batches(early, epoch)):
            shapes.append(tuple(u.shape[2:]))
            assert torch.equal(y, v) and u.is_contiguous(memory_format=torch.channels_last)
            if u.shape[2:] == (8, 8):  # the same draws, then the resize: nothing else changed
                small = F.interpolate(x, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
                assert torch.equal(u, small)
            else:
                assert torch.equal(u, x)
    assert shapes == [(8, 8)] * 7 + [(12, 12)] * 8


def test_a_resumed_epoch_downscales_the_steps_an_uninterrupted_one_does():
    early = loader(dataclasses.replace(AUGMENT, early_size=6, early_epochs=1.4))
    whole = epoch_batches(early, 2)
    for start in (1, 2, 3):
        for (x, y), (u, v) in zip(whole[start:], epoch_batches(early, 2, start)):
            assert torch.equal(x, u) and torch.equal(y, v)
    assert [tuple(x.shape[2:]) for x, _ in whole] == [(6, 6)] * 2 + [(12, 12)] * 3


@pytest.mark.parametrize("knobs", [dict(early_size=0, early_epochs=2.0), dict(early_size=8, early_epochs=0.0)])
def test_off_when_either_is_zero(knobs):
    plain, off = loader(), loader(dataclasses.replace(AUGMENT, **knobs))
    for epoch in (1, 2):
        for (x, y), (u, v) in zip(epoch_batches(plain, epoch), epoch_batches(off, epoch)):
            assert torch.equal(x, u) and torch.equal(y, v)


def test_downscaled_after_a_resize_to_the_input_size_and_without_any_random_augmentation():
    feed = Feed(input_size=16, interpolation="bilinear")
    plain = loader(Augmentation(), feed=feed)
    early = loader(Augmentation(early_size=10, early_epochs=1.0), feed=feed)
    for epoch, side in ((1, 10), (2, 16)):
        for (x, _), (u, _) in zip(epoch_batches(plain, epoch), epoch_batches(early, epoch)):
            assert u.shape[2:] == (side, side)
            assert torch.equal(u, x if side == 16 else F.interpolate(x, size=(10, 10), mode="bilinear", antialias=True))


def test_evaluation_loaders_keep_the_input_size():
    evaluation = loader(Augmentation(), feed=Feed(input_size=16))  # as make_loader builds them: no augmentation
    evaluation.set_epoch(1)
    assert {tuple(x.shape[2:]) for x, _ in evaluation} == {(16, 16)}


TINY = dict(epochs=2, batch_size=16, eval_batch_size=32, progress=False, threads=1, log="none")


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--early-size", "-1"], "'early_size' must be >= 0"),
        (["--early-epochs", "8", "--epochs", "7"], "'early_epochs' (8) is more than the 7 epochs; lower it"),
        (["--early-size", "32", "--input-size", "32"], "'early_size' (32) must be smaller than the input size 32"),
        (["--early-size", "24", "--input-size", "32x24"], "'early_size' needs a square input and it is 32x24"),
        (["--early-size", "16", "--early-epochs", "1"], "'early_size' (16) must be smaller than the input size 16"),
        (["--early-size", "8", "--early-epochs", "1"], "does not accept 8x8 inputs (config key 'early_size')"),
    ],
)
def test_refused_in_one_line_naming_the_key(tiny_dataset, tmp_path, capsys, flags, needle):
    # the last two are known once the images are: 16x16 here, and fastnet takes 9x9 and larger
    code = main(["train", "--data", tiny_dataset, "--out", str(tmp_path / "r"), "--no-progress", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    assert not (tmp_path / "r").exists()


def test_prepared_training_batches_are_small_early_and_evaluation_full_size(tiny_dataset):
    cfg = preset("fast", data=tiny_dataset, early_size=12, early_epochs=1.5, **TINY)
    ready = pipeline.prepare(cfg)
    train = ready.train_loader
    assert len(train) == 3 and ready.val_loader is not None
    shapes = [tuple(x.shape[2:]) for epoch in (1, 2) for x, _ in epoch_batches(train, epoch)]
    assert shapes == [(12, 12)] * 4 + [(16, 16)] * 2  # round(1.5 x 3) steps
    for evaluation in (ready.val_loader, pipeline.make_loader(ready.dataset.test, cfg, ready.prep, CPU, False)):
        for epoch in (1, 2):
            assert {tuple(x.shape[2:]) for x, _ in epoch_batches(evaluation, epoch)} == {(16, 16)}


def test_a_training_with_early_size_runs_end_to_end(tiny_dataset, tmp_path, monkeypatch):
    seen = []  # (training mode, input side) of every forward pass

    def recording(*args, **kwargs):
        model = build_model(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, inputs: seen.append((module.training, inputs[0].shape[-1])))
        return model

    build_model = pipeline.build_model
    monkeypatch.setattr(pipeline, "build_model", recording)
    out = tmp_path / "run"
    cfg = preset("fast", data=tiny_dataset, early_size=12, early_epochs=1.0, **TINY)
    metrics = train_run(cfg, str(out))
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [1, 2]
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["early_size"] == 12 and saved["early_epochs"] == 1.0
    training = [side for mode, side in seen if mode]
    assert training == [12] * 3 + [16] * 3  # 3 steps an epoch; the first epoch small
    assert {side for mode, side in seen if not mode} == {16}  # whitening, validation, test, calibration


def test_a_small_training_set_keeps_the_early_share_of_the_raised_epochs():
    cfg = preset("fast", early_size=24, early_epochs=2.0)
    adapted, _ = adapt_to_dataset(cfg, 1_300)
    assert adapted.epochs > cfg.epochs
    assert adapted.early_epochs == round(2.0 * adapted.epochs / cfg.epochs, 3)
    kept, _ = adapt_to_dataset(cfg, 1_300, keep={"early_epochs"})
    assert kept.early_epochs == 2.0
