"""early_size / early_epochs: the run's first steps fed smaller inputs (progressive resizing), every draw as
without them, evaluation always at the input size."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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
