"""The study's network: AlexNet for 10 classes with BatchNorm and Dropout, initialised as Keras does.

Keras builds it for 256x256x3 inputs; its summary reads Total params: 8,636,810 (8,634,314 trainable,
2,496 non-trainable: the BatchNorm moving means and variances).
"""
from __future__ import annotations

import torch.nn as nn

from .registry import register_model

# Keras BatchNormalization(momentum=0.99, epsilon=1e-3); PyTorch's momentum is 1 - Keras's.
KERAS_BN = {"momentum": 0.01, "eps": 1e-3}


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
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        super().__init__(
            nn.Conv2d(3, 96, 11, stride=4), relu(), nn.BatchNorm2d(96, **KERAS_BN), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2), relu(), nn.BatchNorm2d(256, **KERAS_BN), nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1), relu(),
            nn.Conv2d(384, 384, 3, padding=1), relu(),
            nn.Conv2d(384, 256, 3, padding=1), relu(),
            nn.MaxPool2d(3, 2), nn.Flatten(),
            nn.Linear(6 * 6 * 256, 512), relu(), nn.BatchNorm1d(512, **KERAS_BN), nn.Dropout(dropout),
            nn.Linear(512, 256), relu(), nn.BatchNorm1d(256, **KERAS_BN), nn.Dropout(dropout),
            nn.Linear(256, 128), relu(), nn.BatchNorm1d(128, **KERAS_BN), nn.Dropout(dropout),
            nn.Linear(128, num_classes),  # softmax lives in the loss (cross-entropy on logits)
        )
        keras_init(self)


@register_model(input_size=256)
def seed_alexnet(num_classes: int = 10) -> nn.Module:
    """The study's AlexNet with BN + Dropout, for 256x256 inputs."""
    return SeedAlexNet(num_classes)
