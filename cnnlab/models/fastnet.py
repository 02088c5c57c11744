"""A small fast CIFAR network after the speed records (Page 2018; Jordan 2024, "94% on CIFAR-10 in
3.29 seconds on a single GPU", arXiv 2404.00498): a frozen 2x2 patch-whitening first layer, three
conv groups (conv, max-pool, BN, GELU, conv, BN, GELU), global max-pool and a scaled linear head.
`fastnet94` is airbench94's own layout and initialisation (the fast94 preset's network).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model


class ConvGroup(nn.Sequential):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__(
            nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(channels_out),
            nn.GELU(),
            nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.GELU(),
        )


class FastNet(nn.Module):
    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128), head_scale: float = 1 / 9):
        super().__init__()
        patch_dims = 3 * 2 * 2
        self.whiten = nn.Conv2d(3, 2 * patch_dims, 2, bias=True)
        self.whiten.weight.requires_grad_(False)  # set from the data by init_whitening, then frozen
        self.act = nn.GELU()
        groups, previous = [], 2 * patch_dims
        for width in widths:
            groups.append(ConvGroup(previous, width))
            previous = width
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(previous, num_classes, bias=False)
        self.head_scale = head_scale

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.act(self.whiten(inputs)))
        return self.head(self.pool(x).flatten(1)) * self.head_scale

    @torch.no_grad()
    def init_whitening(self, inputs: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first layer to whiten 2x2 patches of `inputs` (normalised float NCHW): the
        eigenvectors of the patch covariance scaled by 1/sqrt(eigenvalue), and their negatives."""
        dims = inputs.shape[1] * 4
        total, outer, count = torch.zeros(dims, dtype=torch.float64), torch.zeros(dims, dims, dtype=torch.float64), 0
        for chunk in inputs.split(256):  # sums in float64, a chunk of images at a time: bounded memory
            patches = chunk.float().unfold(2, 2, 1).unfold(3, 2, 1)  # N, C, H', W', 2, 2
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, dims).double().cpu()
            total += patches.sum(0)
            outer += patches.T @ patches
            count += len(patches)
        mean = total / count
        covariance = outer / count - torch.outer(mean, mean)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues[:, None] + eps)).float().to(self.whiten.weight.device)
        filters = filters.view(-1, inputs.shape[1], 2, 2)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
        self.whiten.bias.zero_()


@register_model(input_size=32)
def fastnet(num_classes: int = 10) -> nn.Module:
    """Widths 32/64/128: ~0.1 GFLOP per training image; the default preset's network."""
    return FastNet(num_classes, widths=(32, 64, 128))


@register_model(input_size=32)
def fastnet_wide(num_classes: int = 10) -> nn.Module:
    """Widths 64/256/256, airbench94's layout: ~6x the compute of fastnet."""
    return FastNet(num_classes, widths=(64, 256, 256))


class FastNet94(FastNet):
    """airbench94 (Jordan 2024): widths 64/256/256 and its choices, each of which the record measured to
    pay: BatchNorm weights fixed at 1 (only the biases train; the scale is left to the conv filters),
    running statistics that follow each batch closely (momentum 0.4, i.e. airbench's 0.6) and eps 1e-12;
    every conv's first in_channels filters start as the identity (dirac), so that at init each group
    passes its input on; the head's weights at unit std, its logits divided by the width (256). (Its
    MaxPool2d(3) at the end is fastnet's global max-pool: the last map of a 32x32 input is 3x3.)"""

    def __init__(self, num_classes: int = 10):
        super().__init__(num_classes, widths=(64, 256, 256), head_scale=1 / 256)
        with torch.no_grad():
            for module in self.groups.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.momentum, module.eps = 0.4, 1e-12
                    module.weight.requires_grad_(False)
                elif isinstance(module, nn.Conv2d):
                    nn.init.dirac_(module.weight[: module.in_channels])
            self.head.weight.div_(self.head.weight.std())


@register_model(input_size=32)
def fastnet94(num_classes: int = 10) -> nn.Module:
    """airbench94's network and initialisation (~0.7 GFLOP per training image); the fast94 preset's."""
    return FastNet94(num_classes)
