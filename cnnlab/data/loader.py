"""Batches for the model from uint8 images kept on the device.

The whole split lives on the device as uint8 NHWC (CIFAR-10 train: 138 MB). Each batch is one gather:
shuffled indices, random flip and translation (reflect padding) and a nearest-neighbour resize are all
folded into the row/column indices of a single indexing op, so a 256x256 input exists one batch at a
time and no Python runs per image. The gathered NHWC uint8 batch, viewed as NCHW, already has the
channels_last layout; it is converted and normalised in place of a copy.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch

from .preprocess import nearest_index, normalization, resize


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    # Reflect padding without the edge repeated ("reflect" in numpy/torch terms); valid for |shift| < size.
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def gather_batch(images: torch.Tensor, idx: torch.Tensor, out_hw: tuple[int, int] | None = None,
                 flip: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (B, h, w, C) from `images` uint8 (N, H, W, C): picked by `idx`, translated by `shift`
    (long (B, 2): dy, dx, reflect-padded), then mirrored (`flip`, bool (B,)) and resized to `out_hw`
    by nearest neighbour, all in one gather."""
    _, height, width, _ = images.shape
    out_h, out_w = out_hw or (height, width)
    rows = nearest_index(out_h, height, images.device).expand(len(idx), out_h)
    cols = nearest_index(out_w, width, images.device).expand(len(idx), out_w)
    if shift is not None:
        rows = _reflect(rows + shift[:, :1], height)
        cols = _reflect(cols + shift[:, 1:], width)
    if flip is not None:  # mirror the translated image
        cols = torch.where(flip[:, None], width - 1 - cols, cols)
    return images[idx[:, None, None], rows[:, :, None], cols[:, None, :]]


class DeviceLoader:
    """Iterate (inputs, labels) batches over uint8 images held on `device`.

    With `shuffle`, each epoch draws a fresh permutation from a generator seeded by (seed, epoch), and
    each step its augmentation from one seeded by (seed, epoch, step): the batches of epoch e, step s
    are the same whether or not the run was interrupted before them.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device, *,
                 mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
                 input_size: int = 0, interpolation: str = "nearest", shuffle: bool = False,
                 drop_last: bool = False, flip: bool = False, translate: int = 0, cutout: int = 0,
                 seed: int = 0):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        self.batch_size, self.device = batch_size, device
        self.mean, self.std = list(mean), list(std)
        self.scale, self.offset = normalization(self.mean, self.std, device)  # once, not per batch
        height, width = self.images.shape[1:3]
        self.out_hw = (input_size, input_size) if input_size else (height, width)
        self.interpolation = interpolation
        self.shuffle, self.drop_last = shuffle, drop_last
        self.flip, self.translate, self.cutout = flip, translate, cutout
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self, step: int = -1) -> torch.Generator:
        # One stream for the epoch's order and one per step for its augmentation, so that a resumed
        # epoch can start at any step and still draw exactly the numbers an uninterrupted one draws.
        return torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_033 + step + 1) % 2**63)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches()

    def batches(self, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from `start_step` on."""
        n = len(self.labels)
        order = torch.randperm(n, generator=self._generator()) if self.shuffle else torch.arange(n)
        nearest = self.interpolation == "nearest"
        for step in range(start_step, len(self)):
            gen = self._generator(step)
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            flip = torch.rand(len(idx), generator=gen) < 0.5 if self.flip else None
            shift = (torch.randint(-self.translate, self.translate + 1, (len(idx), 2), generator=gen)
                     if self.translate else None)
            idx_d = idx.to(self.device)
            batch = gather_batch(self.images, idx_d, self.out_hw if nearest else None,
                                 flip.to(self.device) if flip is not None else None,
                                 shift.to(self.device) if shift is not None else None)
            x = batch.permute(0, 3, 1, 2).float()
            if not nearest:
                x = resize(x, self.out_hw, self.interpolation)
            inputs = (x * self.scale + self.offset).contiguous(memory_format=torch.channels_last)
            if self.cutout:
                inputs = self._cut(inputs, gen)
            yield inputs, self.labels[idx_d]

    def _cut(self, inputs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Cutout (DeVries & Taylor 2017): one square of side `cutout` set to 0 (the mean) per image."""
        n, _, height, width = inputs.shape
        centre = torch.stack([torch.randint(0, height, (n,), generator=gen),
                              torch.randint(0, width, (n,), generator=gen)], 1).to(inputs.device)
        top, left = centre[:, :1] - self.cutout // 2, centre[:, 1:] - self.cutout // 2
        rows = torch.arange(height, device=inputs.device)[None, :]
        cols = torch.arange(width, device=inputs.device)[None, :]
        in_rows = (rows >= top) & (rows < top + self.cutout)
        in_cols = (cols >= left) & (cols < left + self.cutout)
        keep = ~(in_rows[:, None, :, None] & in_cols[:, None, None, :])
        return inputs * keep
