"""The study's network: AlexNet for 10 classes with BatchNorm and Dropout, initialised as Keras does.

Keras builds it for 256x256x3 inputs; its summary reads Total params: 8,636,810 (8,634,314 trainable,
2,496 non-trainable: the BatchNorm moving means and variances).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .cpu_conv import CpuConv2d
from .registry import register_model
from .upscale import NearestUpscaleConv2d

# Keras BatchNormalization(momentum=0.99, epsilon=1e-3); PyTorch's momentum is 1 - Keras's.
KERAS_BN = {"momentum": 0.01, "eps": 1e-3}


class _KerasMovingVariance:
    """Keras updates a BatchNorm's moving variance with the biased batch variance (sum of squares / n);
    PyTorch's running_var takes the unbiased one (/ (n - 1)), larger by n / (n - 1), most for a dense layer.
    After PyTorch's update, its batch term is rescaled by (n - 1) / n: the same moving variance as Keras,
    to float rounding. The normalisation of the batch itself is the same in both (biased)."""

    biased_moving_var = True  # read by distributed.sync_batchnorm, which keeps this rule over the global batch

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats and self.momentum is not None):
            return super().forward(inputs)
        kept = self.running_var.detach() * (1.0 - self.momentum)
        outputs = super().forward(inputs)
        n = inputs.numel() // inputs.shape[1]  # values per channel in the batch
        with torch.no_grad():
            # through .data: autograd keeps running_var as an input of the batch-norm node (unused by its
            # backward in training mode) and would refuse a version bump of it
            self.running_var.data.copy_(kept + (self.running_var - kept) * ((n - 1) / n))
        return outputs


class KerasBatchNorm1d(_KerasMovingVariance, nn.BatchNorm1d):
    pass


class KerasBatchNorm2d(_KerasMovingVariance, nn.BatchNorm2d):
    pass


def keras_init(model: nn.Module) -> nn.Module:
    """glorot_uniform kernels and zero biases, Keras's defaults for Conv2D and Dense."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


class SeedAlexNet(nn.Sequential):
    def __init__(self, num_classes: int = 10, dropout: float = 0.5):
        def relu():
            return nn.ReLU(inplace=True)

        super().__init__(
            # fed 256x256 images, or (upscale_in_first_conv) the stored images before their nearest upscale
            NearestUpscaleConv2d(3, 96, 11, stride=4),
            relu(),
            KerasBatchNorm2d(96, **KERAS_BN),
            nn.MaxPool2d(3, 2),
            # NNPACK's forward on AVX2-only CPUs (cpu_conv.py), a plain nn.Conv2d elsewhere
            CpuConv2d(96, 256, 5, padding=2),
            relu(),
            KerasBatchNorm2d(256, **KERAS_BN),
            nn.MaxPool2d(3, 2),
            CpuConv2d(256, 384, 3, padding=1),
            relu(),
            CpuConv2d(384, 384, 3, padding=1),
            relu(),
            CpuConv2d(384, 256, 3, padding=1),
            relu(),
            nn.MaxPool2d(3, 2),
            nn.Flatten(),
            nn.Linear(6 * 6 * 256, 512),
            relu(),
            KerasBatchNorm1d(512, **KERAS_BN),
            nn.Dropout(dropout),
            nn.Linear(512, 256),
            relu(),
            KerasBatchNorm1d(256, **KERAS_BN),
            nn.Dropout(dropout),
            nn.Linear(256, 128),
            relu(),
            KerasBatchNorm1d(128, **KERAS_BN),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),  # softmax lives in the loss (cross-entropy on logits)
        )
        keras_init(self)


@register_model(input_size=256)
def seed_alexnet(num_classes: int = 10) -> nn.Module:
    """The study's AlexNet with BN + Dropout, for 256x256 inputs."""
    return SeedAlexNet(num_classes)
