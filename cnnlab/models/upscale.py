"""A convolution over a nearest-upscaled image, computed from the image before upscaling.

The study feeds 32x32 CIFAR images upscaled 8x by nearest neighbour to 256x256 into an 11x11 stride-4
convolution. A nearest upscale by an integer factor f repeats each source pixel f times along each axis:
upscaled[y] = source[y // f]. When the stride s divides f, output rows fall into P = f / s phases (o % P):
all outputs of one phase see the same pattern of source rows, so their 11 taps add up, in fixed groups, to
a kernel of D source rows (2 here). The convolution over the upscaled image is then one convolution over
the source image, stride 1, with P*P phase kernels per filter, the phases interleaved afterwards. The sums
of taps are exact; only the order of float additions changes, so the results equal the plain
upscale-then-convolve to float rounding, gradients included (autograd differentiates the tap sums).
For the study's first layer this takes far fewer multiply-adds, and the upscaled batch is never built.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def phase_taps(kernel: int, stride: int, factor: int, device=None, dtype=None) -> torch.Tensor:
    """(P, D, kernel) 0/1 matrix: tap t of phase p reads source offset d = (stride * p + t) // factor."""
    phases = factor // stride
    offsets = (stride * (phases - 1) + kernel - 1) // factor + 1
    phase = torch.arange(phases, device=device)[:, None]
    tap = torch.arange(kernel, device=device)[None, :]
    # a few whole-tensor ops, built where the weights are: no element-wise writes (a GPU launch each) per step
    return F.one_hot((stride * phase + tap) // factor, offsets).transpose(1, 2).to(dtype)


def upscaled_conv2d(
    source: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    factor: tuple[int, int],
    stride: tuple[int, int],
) -> torch.Tensor:
    """conv2d(nearest_upscale(source, factor), weight, bias, stride), no padding, from `source` itself.
    Needs each stride to divide its factor."""
    (fy, fx), (sy, sx) = factor, stride
    if fy % sy or fx % sx:
        raise ValueError(f"stride {stride} does not divide the upscale factor {factor}")
    out_channels, _, kh, kw = weight.shape
    height, width = source.shape[-2:]
    out_h, out_w = (height * fy - kh) // sy + 1, (width * fx - kw) // sx + 1
    rows = phase_taps(kh, sy, fy, weight.device, weight.dtype)  # (Py, Dy, kh)
    cols = phase_taps(kw, sx, fx, weight.device, weight.dtype)  # (Px, Dx, kw)
    (py, dy, _), (px, dx, _) = rows.shape, cols.shape
    # phase kernels: filter o, row phase p, column phase q -> a (Dy, Dx) kernel over the source
    kernels = torch.einsum("pat,oitu,qbu->opqiab", rows, weight, cols).reshape(out_channels * py * px, -1, dy, dx)
    # one output per source position and phase; pad so every phase has its out_h / P positions
    pad_h, pad_w = max(0, -(-out_h // py) + dy - 1 - height), max(0, -(-out_w // px) + dx - 1 - width)
    if pad_h or pad_w:  # these positions only ever meet zero-weight taps of valid outputs
        source = F.pad(source, (0, pad_w, 0, pad_h))
    # (N, O*Py*Px, Ly, Lx); the bias added here, in place of another full-size tensor after the interleave
    phased = F.conv2d(source, kernels, None if bias is None else bias.repeat_interleave(py * px))
    n, _, ly, lx = phased.shape
    # interleave the phases: output row a*Py + p, column b*Px + q, in the layout of the weights (what the
    # next layers get from a plain convolution)
    grid = phased.view(n, out_channels, py, px, ly, lx)
    if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        out = grid.permute(0, 4, 2, 5, 3, 1).reshape(n, ly * py, lx * px, out_channels)[:, :out_h, :out_w]
        out = out.permute(0, 3, 1, 2)  # NCHW sizes, channels-last memory
    else:
        out = grid.permute(0, 1, 4, 2, 5, 3).reshape(n, out_channels, ly * py, lx * px)[:, :, :out_h, :out_w]
    return out


class NearestUpscaleConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters, same state dict) that can take its input before a nearest upscale:
    with `upscale` (fy, fx) set, forward(source) = the plain convolution of source upscaled by it.
    Default (1, 1): a plain convolution of the input as given (what predict and export feed)."""

    upscale: tuple[int, int] = (1, 1)

    def can_upscale(self, factor: tuple[int, int]) -> bool:
        return (
            self.padding in ((0, 0), "valid")
            and self.dilation == (1, 1)
            and self.groups == 1
            and factor[0] % self.stride[0] == 0
            and factor[1] % self.stride[1] == 0
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.upscale == (1, 1):
            return super().forward(inputs)
        return upscaled_conv2d(inputs, self.weight, self.bias, self.upscale, self.stride)


def upscale_in_first_conv(model: nn.Module, factor: tuple[int, int]) -> bool:
    """Let `model` take its inputs before a nearest upscale by `factor`: True when its input layer is a
    NearestUpscaleConv2d that can (the loader then feeds the stored images as they are), else False and
    nothing changes."""
    layers = [m for m in model.modules() if isinstance(m, NearestUpscaleConv2d)]
    if len(layers) != 1 or factor == (1, 1) or not layers[0].can_upscale(factor):
        return False
    layers[0].upscale = tuple(factor)
    return True
