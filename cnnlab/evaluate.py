"""infer() returns logits, evaluate() returns metrics; each is usable alone."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .device import autocast


def tta_logits(model: nn.Module, inputs: torch.Tensor, tta: bool = False, tta_translate: int = 0) -> torch.Tensor:
    """float32 logits of `inputs`; with `tta`, the mean of those of each image and its mirror; with
    `tta_translate` too (airbench's TTA level 2), that pair weighted 1/2 and 1/4 each the pairs of the image
    translated `tta_translate` pixels down-right and up-left, reflect padded. No grad mode or autocast of
    its own: `infer` adds them, an export traces this as it is."""
    def pair(views: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(views).float() + model(views.flip(-1)).float())

    if not tta:
        return model(inputs).float()
    logits = pair(inputs)
    if tta_translate:
        shift, (height, width) = tta_translate, inputs.shape[-2:]
        padded = F.pad(inputs, (shift,) * 4, mode="reflect")
        down_right, up_left = padded[..., :height, :width], padded[..., 2 * shift:, 2 * shift:]
        logits = 0.5 * logits + 0.25 * (pair(down_right) + pair(up_left))
    return logits


@torch.no_grad()
def infer(model: nn.Module, inputs: torch.Tensor, bf16: bool = False, tta: bool = False,
          tta_translate: int = 0) -> torch.Tensor:
    """float32 logits of one batch of model inputs, with test-time augmentation as `tta_logits` says."""
    with autocast(inputs.device, bf16):
        return tta_logits(model, inputs, tta, tta_translate)


@torch.no_grad()
def predict_batches(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], bf16: bool = False,
                    tta: bool = False, tta_translate: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) over all batches, in eval mode (the model's mode is restored after)."""
    was_training = model.training
    model.eval()
    try:
        outputs, labels = [], []
        for inputs, batch_labels in batches:
            outputs.append(infer(model, inputs, bf16, tta, tta_translate).cpu())
            labels.append(batch_labels.cpu())
    finally:
        model.train(was_training)
    return torch.cat(outputs), torch.cat(labels)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """accuracy, loss (cross-entropy), per-class accuracy and the confusion matrix (rows = true class)."""
    predicted = logits.argmax(1)
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.int64)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    per_class = confusion.diag().double() / confusion.sum(1).clamp(min=1).double()
    return {
        "accuracy": (predicted == labels).double().mean().item(),
        "loss": F.cross_entropy(logits, labels).item(),
        "n": len(labels),
        "per_class_accuracy": dict(zip(classes, per_class.tolist())),
        "confusion": confusion.tolist(),
    }


def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], classes: list[str],
             bf16: bool = False, tta: bool = False, tta_translate: int = 0) -> dict:
    logits, labels = predict_batches(model, batches, bf16, tta, tta_translate)
    return metrics_from_logits(logits, labels, classes)
