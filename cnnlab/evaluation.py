"""infer() returns logits, evaluate() returns metrics; each is usable alone."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import calibration
from .config import Config
from .device import autocast


@dataclass(frozen=True)
class TestTimeAugmentation:
    """The views an evaluated image is given: its mirror too (`flip`), and with it the mirrored pairs of the
    image translated `translate` pixels down-right and up-left (reflect padded; airbench's TTA level 2 at 1).
    Off (the plain logits) unless `flip`. `share` < 1: only that fraction of each batch gets them, its least
    confident images (hiverge's cifar10-speedrun gives a quarter)."""

    __test__ = False  # not a pytest test class, though its name starts with "Test"

    flip: bool = False
    translate: int = 0
    share: float = 1.0

    @classmethod
    def of(cls, cfg: Config) -> TestTimeAugmentation:
        """The test-time augmentation a config asks for (its keys tta, tta_translate, tta_share)."""
        return cls(flip=cfg.tta, translate=cfg.tta_translate, share=cfg.tta_share)


def tta_logits(
    model: nn.Module, inputs: torch.Tensor, tta: TestTimeAugmentation = TestTimeAugmentation()
) -> torch.Tensor:
    """float32 logits of `inputs`, the plain ones unless `tta.flip`; with it, those of `viewed_logits` for
    every image (`tta.share` 1), else for the ceil(share x n) images whose plain prediction has the lowest top
    probability (ties: the earlier image), the others keeping their plain logits. No grad mode or autocast of
    its own: `infer` adds them, an export traces this as it is (with share 1: a traced graph fixes one path)."""
    plain = model(inputs).float()
    if not tta.flip:
        return plain
    if tta.share >= 1:
        return viewed_logits(model, inputs, plain, tta.translate)
    # 0.07 x 100 is 7.000000000000001 in floats: 7 images, not 8
    count = min(len(inputs), max(1, math.ceil(tta.share * len(inputs) - 1e-9)))
    confidence = plain.softmax(1).amax(1)
    rows = torch.sort(confidence, stable=True).indices[:count]
    logits = plain.clone()
    logits[rows] = viewed_logits(model, inputs[rows], plain[rows], tta.translate)
    return logits


def viewed_logits(model: nn.Module, inputs: torch.Tensor, plain: torch.Tensor, translate: int) -> torch.Tensor:
    """The mean of the logits of each image (`plain`, already computed) and its mirror; with `translate`
    (airbench's TTA level 2), that pair weighted 1/2 and 1/4 each the pairs of the image translated `translate`
    pixels down-right and up-left, reflect padded."""

    def pair(views: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(views).float() + model(views.flip(-1)).float())

    logits = 0.5 * (plain + model(inputs.flip(-1)).float())
    if translate:
        shift, (height, width) = translate, inputs.shape[-2:]
        padded = F.pad(inputs, (shift,) * 4, mode="reflect")
        down_right, up_left = padded[..., :height, :width], padded[..., 2 * shift :, 2 * shift :]
        logits = 0.5 * logits + 0.25 * (pair(down_right) + pair(up_left))
    return logits


@torch.no_grad()
def infer(
    model: nn.Module, inputs: torch.Tensor, bf16: bool = False, tta: TestTimeAugmentation = TestTimeAugmentation()
) -> torch.Tensor:
    """float32 logits of one batch of model inputs, with test-time augmentation as `tta_logits` says."""
    with autocast(inputs.device, bf16):
        return tta_logits(model, inputs, tta)


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    bf16: bool = False,
    tta: TestTimeAugmentation = TestTimeAugmentation(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) over all batches, on the host, in eval mode (the model's mode is restored after). They
    stay on the device until the last batch and are copied once: no wait for the device per batch."""
    was_training = model.training
    model.eval()
    try:
        outputs, labels = [], []
        for inputs, batch_labels in batches:
            outputs.append(infer(model, inputs, bf16, tta))
            labels.append(batch_labels)
    finally:
        model.train(was_training)
    return torch.cat(outputs).cpu(), torch.cat(labels).cpu()


def metrics_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, classes: list[str], temperature: float | None = None
) -> dict:
    """The figures of one evaluation, from its float32 logits and labels:

    accuracy, loss (cross-entropy: the negative log-likelihood), n, the calibration figures of the raw
    probabilities (ece, ece_floor: what a perfectly calibrated model would score on these bins, brier,
    mean_confidence: cnnlab/calibration.py), with a `temperature` also those of
    the calibrated ones (calibrated: {ece, nll, brier, mean_confidence, temperature}; the argmax, and so
    every other figure, is the same), per_class_accuracy (each class's recall) and the confusion matrix
    (rows = true class), and from scikit-learn: balanced_accuracy (the mean recall over the classes present
    in `labels`), macro_f1 (the mean F1 over the classes present in `labels` or predicted: a class with no
    image and no prediction has no F1 and is left out, one predicted without images counts 0),
    top5_accuracy (with more than 5 classes) and per_class {class: {precision, recall, f1, support}} for
    every class (0 where a figure divides by zero)."""
    predicted = logits.argmax(1)
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.int64)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    per_class = confusion.diag().double() / confusion.sum(1).clamp(min=1).double()
    raw = calibration.figures(logits, labels)
    metrics = {
        "accuracy": (predicted == labels).double().mean().item(),
        "loss": raw.nll,  # the cross-entropy of the raw probabilities
        "n": len(labels),
        "ece": raw.ece,
        "ece_floor": raw.ece_floor,
        "brier": raw.brier,
        "mean_confidence": raw.mean_confidence,
        "reliability": raw.reliability,
        "per_class_accuracy": dict(zip(classes, per_class.tolist())),
        "confusion": confusion.tolist(),
    }
    if temperature is not None:
        metrics["calibrated"] = calibration.figures(logits, labels, temperature).to_dict()
    return {**metrics, **sklearn_metrics(logits.float().numpy(), labels.numpy(), predicted.numpy(), classes)}


def sklearn_metrics(scores, labels, predicted, classes: list[str]) -> dict:
    """balanced_accuracy, macro_f1, top5_accuracy (more than 5 classes) and per_class, as
    metrics_from_logits describes them, by scikit-learn's own functions (numpy arrays in)."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_fscore_support, top_k_accuracy_score

    every = list(range(len(classes)))
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": the rule documented above
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(labels, predicted)
    figures = {
        "balanced_accuracy": float(balanced),
        "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
    }
    if len(classes) > 5:
        figures["top5_accuracy"] = float(top_k_accuracy_score(labels, scores, k=5, labels=every))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=every, zero_division=0)
    figures["per_class"] = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    return figures


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    classes: list[str],
    bf16: bool = False,
    tta: TestTimeAugmentation = TestTimeAugmentation(),
    temperature: float | None = None,
) -> dict:
    logits, labels = predict_batches(model, batches, bf16, tta)
    return metrics_from_logits(logits, labels, classes, temperature)


def calibration_lines(metrics: dict) -> list[str]:
    """Calibration figures as text: raw, and calibrated where the run has a temperature."""
    if "ece" not in metrics:  # a run saved before calibration figures existed
        return []
    lines = [
        f"calibration (raw probabilities): ECE {100 * metrics['ece']:.2f}%, NLL {metrics['loss']:.4f}, "
        f"Brier {metrics['brier']:.4f}, mean confidence {100 * metrics['mean_confidence']:.2f}%"
    ]
    cal = metrics.get("calibrated")
    if cal:
        lines.append(
            f"calibrated (temperature {cal['temperature']:.3f}, fitted on validation): ECE {100 * cal['ece']:.2f}%, "
            f"NLL {cal['nll']:.4f}, Brier {cal['brier']:.4f}, mean confidence {100 * cal['mean_confidence']:.2f}%"
        )
    floor = (cal or metrics).get("ece_floor")
    if floor is not None:
        lines.append(
            f"a perfectly calibrated model would show an ECE of about {100 * floor:.2f}% on these {metrics['n']:,} "
            "images (15 bins): an ECE near that cannot be told from perfect"
        )
    return lines


def summary_lines(metrics: dict) -> list[str]:
    """The figures of `metrics` (metrics_from_logits's) as text: the overall ones, then one row per class
    with its precision, recall, F1 and support, as scikit-learn's classification_report lays them out."""
    lines = [f"accuracy: {100 * metrics['accuracy']:.2f}%"]
    if "balanced_accuracy" in metrics:  # a run saved before these figures existed has none
        lines += [
            f"balanced accuracy: {100 * metrics['balanced_accuracy']:.2f}%",
            f"macro-F1: {metrics['macro_f1']:.4f}",
        ]
    if "top5_accuracy" in metrics:
        lines.append(f"top-5 accuracy: {100 * metrics['top5_accuracy']:.2f}%")
    split = f", {metrics['split']}" if metrics.get("split") else ""  # evaluate_run names the split it used
    lines.append(f"loss: {metrics['loss']:.4f}  ({metrics['n']} images{split})")
    lines += calibration_lines(metrics)
    per_class = metrics.get("per_class")
    width = max(5, *(len(c) for c in metrics["per_class_accuracy"]))
    if per_class is None:
        return (
            lines
            + [f"{'class':<{width}}  accuracy"]
            + [f"{name:<{width}}  {100 * acc:6.2f}%" for name, acc in metrics["per_class_accuracy"].items()]
        )
    lines.append(f"{'class':<{width}}  precision  recall      f1  support")
    lines += [
        f"{name:<{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:6.4f}  {c['support']:7d}"
        for name, c in per_class.items()
    ]
    return lines
