"""Batches for the model from uint8 images kept on the device.

The whole split lives on the device as uint8 NHWC (a quarter of float32's size). Each batch is one gather:
shuffled indices, random flip and translation (reflect padding) and a nearest-neighbour resize are all
merged into the row/column indices of a single indexing op, so a 256x256 input exists one batch at a
time and no Python runs per image. The gathered NHWC uint8 batch, viewed as NCHW, already has the
channels_last layout; it is converted and normalised in place of a copy.
"""

from __future__ import annotations

import math
import mmap
import os
import warnings
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .preprocess import nearest_index, normalization, resize, to_inputs


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    # Reflect padding without the edge repeated ("reflect" in numpy/torch terms); valid for |shift| < size.
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def gather_batch(
    images: torch.Tensor,
    idx: torch.Tensor,
    out_hw: tuple[int, int] | None = None,
    flip: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 (B, h, w, C) from `images` uint8 (N, H, W, C): picked by `idx`, cut to `boxes` (long (B, 4):
    top, left, height, width; a random-resized crop), translated by `shift` (long (B, 2): dy, dx,
    reflect-padded), then mirrored (`flip`, bool (B,)) and resized to `out_hw` by nearest neighbour, all
    in one gather."""
    _, height, width, _ = images.shape
    out_h, out_w = out_hw or (height, width)
    if boxes is not None:
        i, j = torch.arange(out_h, device=images.device), torch.arange(out_w, device=images.device)
        rows = boxes[:, :1] + ((2 * i + 1) * boxes[:, 2:3]) // (2 * out_h)
        cols = boxes[:, 1:2] + ((2 * j + 1) * boxes[:, 3:4]) // (2 * out_w)
        if flip is not None:
            cols = torch.where(flip[:, None], cols.flip(-1), cols)
            flip = None
    else:
        rows = nearest_index(out_h, height, images.device).expand(len(idx), out_h)
        cols = nearest_index(out_w, width, images.device).expand(len(idx), out_w)
    if shift is not None:
        rows = _reflect(rows + shift[:, :1], height)
        cols = _reflect(cols + shift[:, 1:], width)
    if flip is not None:  # mirror the translated image
        cols = torch.where(flip[:, None], width - 1 - cols, cols)
    return images[idx[:, None, None], rows[:, :, None], cols[:, None, :]]


def downscale(inputs: torch.Tensor, side: int) -> torch.Tensor:
    """float NCHW inputs resized to `side` x `side`, bilinear and antialiased (each output pixel averages the
    inputs it covers), in channels_last layout as the loader's batches."""
    return resize(inputs, (side, side), "bilinear").contiguous(memory_format=torch.channels_last)


def random_boxes(
    n: int, height: int, width: int, scale_min: float, gen: torch.Generator, ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> torch.Tensor:
    """(n, 4) boxes top, left, height, width of random-resized crops (Szegedy et al. 2015, torchvision's
    RandomResizedCrop): area a fraction in [scale_min, 1] of the image, aspect ratio log-uniform in
    `ratio`, clipped to the image, placed uniformly. Drawn on the generator's device."""
    device = gen.device
    area = (scale_min + (1 - scale_min) * torch.rand(n, generator=gen, device=device)) * height * width
    log_ratio = torch.empty(n, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    aspect = torch.exp(log_ratio)
    box_h = torch.sqrt(area / aspect).round().clamp(1, height).long()
    box_w = torch.sqrt(area * aspect).round().clamp(1, width).long()
    top = (torch.rand(n, generator=gen, device=device) * (height - box_h + 1)).long()
    left = (torch.rand(n, generator=gen, device=device) * (width - box_w + 1)).long()
    return torch.stack([top, left, box_h, box_w], 1)


@dataclass(frozen=True)
class Feed:
    """What the model is fed: inputs = (x / 255 - mean) / std per channel, at `input_size` (a side or
    (height, width); 0: the stored size), resized by `interpolation` (nearest | bilinear)."""

    mean: Sequence[float] = (0.0, 0.0, 0.0)
    std: Sequence[float] = (1.0, 1.0, 1.0)
    input_size: int | tuple[int, int] = 0
    interpolation: str = "nearest"


@dataclass(frozen=True)
class Augmentation:
    """The random changes of each training image, drawn per epoch: mirror (`flip`; each image every other
    epoch with `flip_alternate`), translate by up to `translate` pixels (reflect-padded), a random-resized
    crop of at least `crop_scale` of the area (0: none), a `cutout` square of that side, and a brightness
    shift up to +-`brightness` and contrast factor up to 1 +- `contrast` on the normalised inputs.

    Not random: in the run's first `early_epochs` epochs (their first round(early_epochs x steps an epoch)
    steps, as the lr schedule counts fractional epochs) the finished inputs are downscaled to `early_size` x
    `early_size` (bilinear, antialiased): fewer FLOPs a step. 0 in either: off."""

    flip: bool = False
    flip_alternate: bool = False
    translate: int = 0
    cutout: int = 0
    crop_scale: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    early_size: int = 0  # a side in pixels
    early_epochs: float = 0.0

    def __bool__(self) -> bool:  # whether anything is drawn (early_size draws nothing)
        return bool(self.flip or self.translate or self.crop_scale or self.cutout or self.brightness or self.contrast)


@dataclass(frozen=True)
class Sampling:
    """The order of the batches: shuffled per epoch from `seed` (with `shuffle`; with `balanced` too, drawn
    with replacement so that each class is equally likely), the last short batch dropped (`drop_last`), and
    `shard` (rank, ranks): this rank's part of each global batch."""

    shuffle: bool = False
    balanced: bool = False
    drop_last: bool = False
    seed: int = 0
    shard: tuple[int, int] = (0, 1)


@dataclass(frozen=True, eq=False)
class Holding:
    """Which images are served and where they are kept: the rows `rows` of the array (all when None), held
    on the device, or on the host and streamed a batch at a time (`stream`). Not compared (`rows` is an
    array)."""

    rows: np.ndarray | None = None
    stream: bool = False


def class_counts(labels: np.ndarray | torch.Tensor, n_classes: int) -> np.ndarray:
    """Images of each class (int64 (n_classes,)) among `labels`."""
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    return np.bincount(labels.astype(np.int64), minlength=n_classes)


def balanced_class_weights(counts: np.ndarray) -> np.ndarray:
    """scikit-learn's compute_class_weight("balanced"): n_images / (n_classes x count) per class, which
    makes every class weigh the same in a sum over the images (1 when balanced); 0 for a class without
    images (nothing to weigh; scikit-learn refuses it)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def balanced_image_weights(labels: torch.Tensor) -> torch.Tensor:
    """Each image's probability of being drawn by the balanced sampler, float64 on the labels' device:
    1 / (n_classes x its class's count), so each class present is drawn equally often."""
    counts = torch.bincount(labels)
    present = int((counts > 0).sum())
    return 1.0 / (present * counts.double()[labels])


class FileRows:
    """Rows of a memory-mapped .npy file (the decode cache) read with os.preadv: the data pass through
    the page cache only, where reading them through the map would count every page touched in this
    process's memory, and keep it there, until the whole cache is."""

    def __init__(self, images: np.memmap):
        self.row_shape = images.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape)) * images.itemsize
        self.offset = images.offset
        self.fd = os.open(images.filename, os.O_RDONLY)
        weakref.finalize(self, os.close, self.fd)

    @classmethod
    def open(cls, images: np.ndarray) -> FileRows | None:
        """A reader of `images` when they are a read-only map of a whole file; else None (indexed as arrays)."""
        whole = isinstance(images, np.memmap) and isinstance(images.base, mmap.mmap)  # not a slice of one
        if not (whole and images.filename and images.mode == "r" and images.dtype == np.uint8):
            return None
        return cls(images) if images.flags.c_contiguous and hasattr(os, "preadv") else None

    def take(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.row_shape), dtype=np.uint8)
        flat = out.reshape(len(rows), self.row_bytes)
        for j, row in enumerate(rows.tolist()):
            if os.preadv(self.fd, [flat[j]], self.offset + row * self.row_bytes) != self.row_bytes:
                raise OSError(f"short read of row {row} from the decode cache")
        return out


def rows_to_device(
    images: np.ndarray,
    rows: np.ndarray | None,
    device: torch.device,
    reader: FileRows | None = None,
    chunk_bytes: int = 256 << 20,
) -> torch.Tensor:
    """Rows `rows` (all when None) of `images` in a new uint8 tensor on `device`, copied `chunk_bytes` at
    a time (read by `reader` when given), never all of them at once on the host."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    out = torch.empty((len(rows), *images.shape[1:]), dtype=torch.uint8, device=device)
    step = max(1, chunk_bytes // max(1, int(np.prod(images.shape[1:]))))
    for start in range(0, len(rows), step):
        part = rows[start : start + step]
        chunk = images[part] if reader is None else reader.take(part)
        out[start : start + len(part)] = torch.from_numpy(np.ascontiguousarray(chunk)).to(device)
    return out


class DeviceLoader:
    """Iterate (inputs, labels) batches over uint8 images.

    The images (rows `hold.rows` of `images`, all when None) are held on `device`: on a CPU the array
    itself, a memory map of the decode cache, is used in place (never copied); on a GPU the split's rows
    are copied there once. With `hold.stream`, they stay on the host and each batch is gathered there,
    copied from pinned memory without blocking, the next one prepared by a background thread while the
    device computes: for a split that does not fit on the device. Augmentation and normalisation are then
    the same, on the device, so both ways give the same batches.

    `hold`, `feed`, `augment` and `sampling` are the specs above
    (DeviceLoader(images, labels, 32, device, hold=Holding(index), sampling=Sampling(shuffle=True))).

    Each epoch draws its order (with `shuffle`) and the augmentation of all its images in one go, from one
    generator seeded by (seed, epoch) on the device where the batches are made (a CUDA generator on a GPU:
    no host work and no copy per step; the numbers differ from a CPU's): the batches of epoch e, step s are
    the same whether or not the run was interrupted before them. With `flip_alternate`, the flips come
    instead from a generator seeded by the seed alone: each image mirrored in odd epochs or in even ones.

    With `balanced` sampling, the epoch's order is instead as many images drawn with replacement, each with
    probability 1 / (n_classes x its class's count), from the same generator: classes equally likely, the
    epoch as long, and the order still a function of (seed, epoch) alone.

    With `shard` (rank, ranks), for one training over several processes (DistributedDataParallel), each
    global batch of `batch_size` is cut into `ranks` equal contiguous parts and this loader yields part
    `rank`; every rank draws the whole epoch's order and augmentation from the same generator and keeps
    its part, so the ranks together see exactly the batches of one process.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        device: torch.device,
        *,
        hold: Holding = Holding(),
        feed: Feed = Feed(),
        augment: Augmentation = Augmentation(),
        sampling: Sampling = Sampling(),
    ):
        self.feed, self.augment, self.sampling = feed, augment, sampling
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        self.batch_size, self.device, self.stream = batch_size, device, hold.stream
        self._hold(images, hold.rows)
        self.scale, self.offset = normalization(list(feed.mean), list(feed.std), device)  # once, not per batch
        self.in_hw = tuple(images.shape[1:3])
        size = feed.input_size
        self.out_hw = (
            (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (size, size) if size else self.in_hw
        )
        self.epoch = 0
        self.image_weights = balanced_image_weights(self.labels) if sampling.balanced else None
        rank, ranks = sampling.shard
        if batch_size % ranks:
            raise ValueError(f"batch_size {batch_size} is not a multiple of {ranks} ranks")
        share = batch_size // ranks
        self.part = slice(None) if ranks == 1 else slice(rank * share, (rank + 1) * share)
        # constants built once, not per batch: a streamed batch's rows, cutout's pixel coordinates
        self.positions = torch.arange(share, device=device)
        self.grid = (
            torch.arange(self.out_hw[0], device=device)[None, :],
            torch.arange(self.out_hw[1], device=device)[None, :],
        )

    def _hold(self, images: np.ndarray, rows: np.ndarray | None) -> None:
        """Keep the images where the batches are gathered: the host array (streaming, read from the cache
        file when it is one), the array itself (a CPU), or the split's rows copied to the device once."""
        self.host, self.host_rows = images, (None if rows is None else np.asarray(rows))
        in_place = not self.stream and self.device.type == "cpu"  # the map itself: no reader needed
        self.images, self.rows, self.reader = None, None, None if in_place else FileRows.open(images)
        if self.stream:
            return
        if self.device.type == "cpu":
            with warnings.catch_warnings():  # a read-only memory map: only ever read
                warnings.simplefilter("ignore", UserWarning)
                self.images = torch.from_numpy(np.ascontiguousarray(images))
            self.rows = None if rows is None else torch.from_numpy(np.asarray(rows, dtype=np.int64))
        else:  # only the split's rows go to the device
            self.images = rows_to_device(images, rows, self.device, self.reader)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.sampling.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _early_steps(self) -> int:
        """How many of this epoch's first steps are fed at `early_size`: what is left of the run's first
        round(early_epochs x steps an epoch) steps after the epochs before this one. Epochs count from 1, as
        training's do (0, a loader never set, counts as the first)."""
        aug, steps = self.augment, len(self)
        if not (aug.early_size and aug.early_epochs):
            return 0
        return max(0, round(aug.early_epochs * steps) - max(self.epoch - 1, 0) * steps)

    def _generator(self) -> torch.Generator:
        # One stream an epoch: its order and all its augmentation, so that a resumed epoch can start at any
        # step and still get exactly the numbers an uninterrupted one gets.
        where = self.device if self.device.type == "cuda" else "cpu"
        seed = ((self.sampling.seed * 1_000_003 + self.epoch) * 1_000_033) % 2**63
        return torch.Generator(device=where).manual_seed(seed)

    def _draws(self) -> dict[str, torch.Tensor]:
        """The epoch's randomness, one row per place in the epoch, on the device: `order` (the images in the
        order they are seen) and, where switched on, `flip`, `shift`, `boxes`, `centre` (of cutout) and
        `jitter` (brightness shift, contrast factor). Each is drawn after the ones before it, so switching
        one on leaves the draws before it as they were."""
        n, device, aug = len(self.labels), self.device, self.augment
        shuffle = self.sampling.shuffle or self.sampling.balanced
        gen = self._generator() if shuffle or aug else None
        if self.image_weights is not None:
            order = torch.multinomial(self.image_weights, n, replacement=True, generator=gen)
        else:
            order = torch.randperm(n, generator=gen, device=device) if shuffle else torch.arange(n, device=device)
        draws = {"order": order}
        if aug.flip and aug.flip_alternate:  # each image mirrored in every other epoch, from a start of its own
            start = torch.Generator(device=gen.device).manual_seed(self.sampling.seed)  # the same every epoch
            first = torch.rand(n, generator=start, device=device) < 0.5  # image i's orientation in odd epochs
            draws["flip"] = first[draws["order"]] ^ bool(self.epoch % 2 == 0)
        elif aug.flip:
            draws["flip"] = torch.rand(n, generator=gen, device=device) < 0.5
        if aug.translate:
            draws["shift"] = torch.randint(-aug.translate, aug.translate + 1, (n, 2), generator=gen, device=device)
        if aug.crop_scale:
            draws["boxes"] = random_boxes(n, *self.in_hw, aug.crop_scale, gen)
        if aug.cutout:
            draws["centre"] = torch.stack(
                [
                    torch.randint(0, self.out_hw[0], (n,), generator=gen, device=device),
                    torch.randint(0, self.out_hw[1], (n,), generator=gen, device=device),
                ],
                1,
            )
        if aug.brightness or aug.contrast:
            uniform = torch.rand(n, 2, generator=gen, device=device) * 2 - 1  # in [-1, 1)
            draws["jitter"] = torch.stack([uniform[:, 0] * aug.brightness, 1 + uniform[:, 1] * aug.contrast], 1)
        return draws

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches()

    def _fetch(self, idx: torch.Tensor) -> torch.Tensor:
        """Streaming: the batch's stored images, gathered on the host (pinned for a GPU)."""
        src = idx.numpy()
        if self.host_rows is not None:
            src = self.host_rows[src]
        rows = self.host[src] if self.reader is None else self.reader.take(src)
        batch = torch.from_numpy(np.ascontiguousarray(rows))
        return batch.pin_memory() if self.device.type == "cuda" else batch

    def batches(self, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from `start_step` on. Each is this rank's part of the global batch: its
        draws are the whole batch's, cut to the part, so they do not depend on how many ranks share it."""
        draws = self._draws()
        early = self._early_steps()
        order = draws.pop("order")
        labels = self.labels[order]  # in the epoch's order, once an epoch
        spans = [slice(step * self.batch_size, (step + 1) * self.batch_size) for step in range(start_step, len(self))]
        if self.stream:  # gathered on the host: the order goes there once an epoch
            host_order = order.cpu()
            picks = [host_order[span][self.part] for span in spans]
        else:  # the stored row of each place in the epoch, once an epoch
            source = order if self.rows is None else self.rows.to(self.device)[order]
        pool = ThreadPoolExecutor(1) if self.stream else None
        try:
            ahead = pool.submit(self._fetch, picks[0]) if pool and picks else None
            for k, span in enumerate(spans):
                if pool:
                    images = ahead.result().to(self.device, non_blocking=True)
                    if k + 1 < len(picks):  # while the device computes this one
                        ahead = pool.submit(self._fetch, picks[k + 1])
                    at = self.positions[: len(images)]
                else:
                    images, at = self.images, source[span][self.part]
                part = {name: drawn[span][self.part] for name, drawn in draws.items()}
                inputs = self._augment(images, at, part)
                if start_step + k < early:  # after every other change, which all work at the input size
                    inputs = downscale(inputs, self.augment.early_size)
                yield inputs, labels[span][self.part]
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)

    def _augment(self, images: torch.Tensor, at: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """The inputs of rows `at` of `images`, augmented by this batch's `draws` (see `_draws`)."""
        boxes = draws.get("boxes")
        interpolation = self.feed.interpolation
        nearest = interpolation == "nearest" or boxes is not None
        batch = gather_batch(images, at, self.out_hw if nearest else None, draws.get("flip"), draws.get("shift"), boxes)
        scale, offset = self.scale, self.offset
        if "jitter" in draws:  # (x * scale + offset + shift) * factor per image, merged into the normalisation
            jitter = draws["jitter"][:, :, None, None, None]
            scale, offset = scale * jitter[:, 1], (offset + jitter[:, 0]) * jitter[:, 1]
        inputs = to_inputs(batch, scale, offset, None if nearest else self.out_hw, interpolation)
        if self.augment.cutout:
            inputs = self._cut(inputs, draws["centre"])
        return inputs

    def _cut(self, inputs: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """Cutout (DeVries & Taylor 2017): one square of side `cutout` set to 0 (the mean) per image,
        centred at `centre` (long (B, 2): row, column)."""
        side = self.augment.cutout
        top, left = centre[:, :1] - side // 2, centre[:, 1:] - side // 2
        in_rows = (self.grid[0] >= top) & (self.grid[0] < top + side)
        in_cols = (self.grid[1] >= left) & (self.grid[1] < left + side)
        keep = ~(in_rows[:, None, :, None] & in_cols[:, None, None, :])
        return inputs * keep
