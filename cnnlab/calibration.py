"""Does "0.9" mean right nine times in ten? Calibration figures of a model's probabilities, and temperature
scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar T that divides the logits,
fitted on the validation split by minimising its negative log-likelihood. Dividing every logit of an image
by the same T > 0 keeps their order, so the predicted class, and every accuracy, is unchanged."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

N_BINS = 15  # equal-width confidence bins of the expected calibration error, as Guo et al. report it
T_RANGE = (0.05, 20.0)  # the temperatures searched; outside, a model is broken rather than mis-calibrated


@dataclasses.dataclass(frozen=True)
class Figures:
    """How well the probabilities softmax(logits / temperature) match the outcomes."""

    ece: float  # expected calibration error: top-label, 15 equal-width bins, weighted by their images
    nll: float  # negative log-likelihood of the true class (cross-entropy), nats per image
    brier: float  # Brier score: the squared distance of the probability vector from the one-hot label
    mean_confidence: float  # the mean top-1 probability (beside the accuracy: under- or over-confident)
    temperature: float = 1.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def figures(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> Figures:
    """The calibration figures of float logits (n, classes) and int labels (n) at `temperature`. The ECE is
    torchmetrics' multiclass calibration error (l1 norm, 15 bins)."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    scaled = logits.float() / temperature
    probabilities = scaled.softmax(1)
    classes = logits.shape[1]
    ece = multiclass_calibration_error(probabilities, labels, num_classes=classes, n_bins=N_BINS, norm="l1")
    one_hot = F.one_hot(labels, classes).float()
    return Figures(
        ece=float(ece),
        nll=float(F.cross_entropy(scaled, labels)),
        brier=float(((probabilities - one_hot) ** 2).sum(1).mean()),
        mean_confidence=float(probabilities.max(1).values.mean()),
        temperature=float(temperature),
    )


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T in T_RANGE that minimises the negative log-likelihood of softmax(logits / T), by scipy's bounded
    scalar minimiser on log T (the likelihood is smooth and has one minimum there)."""
    from scipy.optimize import minimize_scalar

    logits = logits.double()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    found = minimize_scalar(nll, bounds=tuple(math.log(t) for t in T_RANGE), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(found.x))
