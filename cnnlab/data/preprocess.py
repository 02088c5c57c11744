"""Stored uint8 images -> model inputs. The one place of this arithmetic: the training loader, predict
and export all use it, so a run is fed the same numbers wherever it runs.

A run's preprocessing is a `Preprocessing`, saved in its config.json under data.preprocessing as
    mean, std      per channel, in [0, 1] units: inputs = (x / 255 - mean) / std
    image_size     [height, width] the images are decoded and stored at
    input_size     side, or [height, width], fed to the model (resized on the device per batch)
    interpolation  nearest | bilinear
    resize, exif   how the files were decoded: crop | pad | squash, upright by EXIF or not
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Preprocessing:
    """What turns a run's stored uint8 images into model inputs (see the module's docstring)."""

    mean: list[float]
    std: list[float]
    image_size: tuple[int, int]
    input_size: tuple[int, int]
    interpolation: str = "nearest"
    resize: str = "squash"
    exif: bool = False

    def to_dict(self) -> dict[str, Any]:
        """As saved in config.json (JSON types, the keys in this order)."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "image_size": list(self.image_size),
            "input_size": list(self.input_size),
            "interpolation": self.interpolation,
            "resize": self.resize,
            "exif": self.exif,
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Preprocessing:
        """From config.json; runs saved before resize and exif existed squashed their images, without EXIF."""
        height, width = saved["image_size"]
        return cls(
            list(saved["mean"]),
            list(saved["std"]),
            (int(height), int(width)),
            input_hw(saved),
            saved["interpolation"],
            saved.get("resize", "squash"),
            bool(saved.get("exif", False)),
        )


def input_hw(prep: dict | Preprocessing) -> tuple[int, int]:
    """(height, width) fed to the model, from a run's preprocessing (saved or as a Preprocessing)."""
    size = prep.input_size if isinstance(prep, Preprocessing) else prep["input_size"]
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def nearest_index(out_len: int, in_len: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Source index of each output pixel of a nearest resize, as PIL's NEAREST and torch's
    'nearest-exact' pick it: floor((i + 0.5) * in / out)."""
    i = torch.arange(out_len, device=device)
    return ((2 * i + 1) * in_len) // (2 * out_len)


def normalization(
    mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, offset), each (1, C, 1, 1), such that inputs = x * scale + offset = (x / 255 - mean) / std."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=device).view(1, -1, 1, 1)
    offset = torch.tensor([-m / s for m, s in zip(mean, std)], device=device).view(1, -1, 1, 1)
    return scale, offset


def resize(x: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """float NCHW resized to `size` (nearest as PIL's NEAREST; bilinear antialiased when shrinking)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(
        x,
        size=size,
        mode="nearest-exact" if interpolation == "nearest" else interpolation,
        antialias=interpolation != "nearest" and size[0] < x.shape[2],
    )


def to_inputs(
    batch: torch.Tensor,
    scale: torch.Tensor,
    offset: torch.Tensor,
    size: tuple[int, int] | None = None,
    interpolation: str = "nearest",
) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in channels_last layout, x * scale + offset (from `normalization`),
    resized to `size` when given: the last step of the training loader, predict and export alike."""
    x = batch.permute(0, 3, 1, 2).float()
    if size is not None:
        x = resize(x, size, interpolation)
    return (x * scale + offset).contiguous(memory_format=torch.channels_last)


class Preprocess(nn.Module):
    """uint8 (N, H, W, 3) images at the stored size -> normalised float NCHW at the input size, as a
    module (predict runs it, export writes it into the ONNX/TorchScript graph). Nearest resizing is two
    index selections, the same pixels the training loader gathers."""

    def __init__(self, prep: Preprocessing):
        super().__init__()
        height, width = prep.image_size
        self.size = prep.input_size
        self.interpolation = prep.interpolation
        self.register_buffer("rows", nearest_index(self.size[0], height), persistent=False)
        self.register_buffer("cols", nearest_index(self.size[1], width), persistent=False)
        scale, offset = normalization(prep.mean, prep.std)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("offset", offset, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.interpolation == "nearest":
            return to_inputs(images.index_select(1, self.rows).index_select(2, self.cols), self.scale, self.offset)
        return to_inputs(images, self.scale, self.offset, self.size, self.interpolation)
