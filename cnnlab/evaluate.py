"""infer() returns logits, evaluate() returns metrics; each is usable alone."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .device import autocast


@torch.no_grad()
def infer(model: nn.Module, inputs: torch.Tensor, bf16: bool = False, tta: bool = False) -> torch.Tensor:
    """float32 logits of one batch of model inputs; with `tta`, averaged with those of the mirror images."""
    with autocast(inputs.device, bf16):
        logits = model(inputs).float()
        if tta:
            logits = 0.5 * (logits + model(inputs.flip(-1)).float())
    return logits


@torch.no_grad()
def predict_batches(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], bf16: bool = False,
                    tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) over all batches, in eval mode (the model's mode is restored after)."""
    was_training = model.training
    model.eval()
    try:
        outputs, labels = [], []
        for inputs, batch_labels in batches:
            outputs.append(infer(model, inputs, bf16, tta).cpu())
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
             bf16: bool = False, tta: bool = False) -> dict:
    logits, labels = predict_batches(model, batches, bf16, tta)
    return metrics_from_logits(logits, labels, classes)
