"""The device loader: exact round trips of rescale/normalise, resize, flip and translate."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import Augmentation, DeviceLoader, Feed, Sampling, gather_batch

CPU = torch.device("cpu")


def images(n=6, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_rescale_round_trip_and_channels_last():
    imgs = images()
    loader = DeviceLoader(imgs, np.arange(6), 4, CPU)
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [4, 2]
    inputs = torch.cat([b[0] for b in batches])
    assert inputs.is_contiguous(memory_format=torch.channels_last)
    back = (inputs * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(back, imgs)


def test_normalise_uses_mean_and_std():
    imgs = images()
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    inputs = next(iter(DeviceLoader(imgs, np.arange(6), 6, CPU, feed=Feed(mean, std))))[0]
    expected = (imgs / 255.0 - np.array(mean)) / np.array(std)
    assert np.allclose(inputs.permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)


def test_nearest_upscale_equals_pil_nearest():
    imgs = images(2)
    inputs = next(iter(DeviceLoader(imgs, np.arange(2), 2, CPU, feed=Feed(input_size=256))))[0]
    assert inputs.shape == (2, 3, 256, 256)
    got = (inputs * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i in range(2):
        pil = np.asarray(Image.fromarray(imgs[i]).resize((256, 256), Image.Resampling.NEAREST))
        assert np.array_equal(got[i], pil)


def test_nearest_downscale_equals_pil_nearest():
    imgs = images(2, size=40)
    got = gather_batch(torch.from_numpy(imgs), torch.arange(2), (17, 17)).numpy()
    for i in range(2):
        assert np.array_equal(got[i], np.asarray(Image.fromarray(imgs[i]).resize((17, 17), Image.Resampling.NEAREST)))


def test_flip_and_translate_match_numpy():
    imgs = images(3)
    flip = torch.tensor([True, False, True])
    shift = torch.tensor([[2, -1], [-2, 0], [1, 2]])
    got = gather_batch(torch.from_numpy(imgs), torch.arange(3), None, flip, shift).numpy()
    for i in range(3):
        img = imgs[i][:, ::-1] if flip[i] else imgs[i]
        padded = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode="reflect")
        dy, dx = shift[i].tolist()
        assert np.array_equal(got[i], padded[2 + dy : 34 + dy, 2 + dx : 34 + dx])


def test_shuffle_is_a_permutation_fixed_by_seed_and_epoch():
    labels = np.arange(100)
    imgs = images(100, size=4)

    def epoch_labels(seed, epoch):
        augment, sampling = Augmentation(flip=True, translate=1), Sampling(shuffle=True, drop_last=True, seed=seed)
        loader = DeviceLoader(imgs, labels, 32, CPU, augment=augment, sampling=sampling)
        loader.set_epoch(epoch)
        return torch.cat([b[1] for b in loader]).tolist()

    first = epoch_labels(0, 1)
    assert len(first) == 96 and len(set(first)) == 96  # n // batch_size full batches, no repeats
    assert first == epoch_labels(0, 1)
    assert first != epoch_labels(0, 2) and first != epoch_labels(1, 1)


def test_cutout_zeroes_one_square_per_image():
    imgs = np.full((4, 16, 16, 3), 255, dtype=np.uint8)
    inputs = next(
        iter(DeviceLoader(imgs, np.arange(4), 4, CPU, augment=Augmentation(cutout=4), sampling=Sampling(shuffle=True)))
    )[0]
    zeros = (inputs[:, 0] == 0).flatten(1).sum(1)
    assert all(1 <= z <= 16 for z in zeros.tolist())  # a 4x4 square, clipped at the border


@pytest.mark.parametrize("bad", [0])
def test_empty_when_batch_larger_than_data_with_drop_last(bad):
    loader = DeviceLoader(images(3), np.arange(3), 4, CPU, sampling=Sampling(drop_last=True))
    assert len(loader) == bad and list(loader) == []


def test_brightness_and_contrast_jitter_each_image_within_its_ranges_and_leave_the_other_draws_alone():
    imgs, labels = images(64, size=8), np.arange(64)
    common = dict(feed=Feed([0.5] * 3, [0.25] * 3), sampling=Sampling(shuffle=True, drop_last=True, seed=5))
    augment = Augmentation(flip=True, flip_alternate=True, translate=2, cutout=3)
    plain = DeviceLoader(imgs, labels, 16, CPU, augment=augment, **common)
    jittered = DeviceLoader(
        imgs, labels, 16, CPU, augment=dataclasses.replace(augment, brightness=0.3, contrast=0.2), **common
    )
    shifts, factors = [], []
    for epoch in (1, 2):
        plain.set_epoch(epoch)
        jittered.set_epoch(epoch)
        for (x, y), (u, v) in zip(plain, jittered):
            assert torch.equal(y, v) and u.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(x == 0, u == 0)  # cutout's squares stay 0 (no pixel normalises to 0 exactly here)
            for xi, ui in zip(x.flatten(1).double(), u.flatten(1).double()):
                kept = xi != 0  # off the cutout square: ui = (xi + shift) * factor
                fit = torch.linalg.lstsq(torch.stack([xi[kept], torch.ones_like(xi[kept])], 1), ui[kept, None])
                factor, intercept = fit.solution.flatten().tolist()
                assert torch.allclose((xi[kept] + intercept / factor) * factor, ui[kept], atol=1e-5)
                shifts.append(intercept / factor)
                factors.append(factor)
    shifts, factors = np.array(shifts), np.array(factors)
    assert np.all(np.abs(shifts) <= 0.3 + 1e-5) and np.all(np.abs(factors - 1) <= 0.2 + 1e-5)
    # 128 uniform draws each: spread over their ranges, not one value (P(|max| < 0.8 range) = 0.8 ** 128)
    assert np.abs(shifts).max() > 0.8 * 0.3 and np.abs(factors - 1).max() > 0.8 * 0.2
    assert len(set(np.round(shifts, 5))) == len(shifts)
