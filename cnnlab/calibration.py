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
    # the ECE a perfectly calibrated model with these confidences would show on this many images (the mean
    # over simulated outcomes: the estimator's floor, about 0.9% on 5,000 images at CIFAR-10's 88%)
    ece_floor: float = 0.0
    reliability: dict = dataclasses.field(default_factory=dict)  # per confidence bin: count, accuracy, confidence

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _bin_sums(probabilities: torch.Tensor, labels: torch.Tensor, bins: int) -> torch.Tensor:
    # (3, bins): images, right predictions and summed top-1 probability per equal-width confidence bin
    # (upper edge closed)
    confidence, predicted = probabilities.max(1)
    index = torch.bucketize(confidence, torch.linspace(0, 1, bins + 1, dtype=confidence.dtype)[1:-1])
    values = torch.stack([torch.ones_like(confidence), (predicted == labels).to(confidence.dtype), confidence])
    return torch.zeros(3, bins, dtype=torch.float64).index_add_(1, index, values.double())


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = N_BINS) -> float:
    """Top-label ECE: the images binned by their top-1 probability into `bins` equal-width bins, the sum over
    bins of |accuracy - mean confidence| weighted by the bin's share of the images. The same figure as
    torchmetrics' multiclass_calibration_error(norm="l1") (a test holds them together), without the 3 s
    that importing torchmetrics adds to every start."""
    _, right, confident = _bin_sums(probabilities, labels, bins)
    return float((right - confident).abs().sum() / max(len(labels), 1))


def reliability(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = N_BINS) -> dict:
    """A reliability diagram's data: per confidence bin its images, their accuracy and mean top-1 probability
    (None in an empty bin)."""
    count, right, confident = _bin_sums(probabilities, labels, bins).tolist()
    return {
        "count": [int(c) for c in count],
        "accuracy": [r / c if c else None for r, c in zip(right, count)],
        "confidence": [p / c if c else None for p, c in zip(confident, count)],
    }


def sampling_floor(bins: dict, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The ECE of a perfectly calibrated model whose images fall in `bins` (a reliability()'s count and
    confidence) as they do here: each bin's right answers drawn as Binomial(count, confidence), `draws` times.
    Returns the mean and the 95th percentile. The binned ECE is biased upwards (|noise| > 0 in every bin): on a
    few thousand images a perfect model does not score 0, and an ECE near this floor cannot be told from it."""
    import numpy as np

    count = np.asarray(bins["count"], dtype=np.int64)
    confidence = np.asarray([c or 0.0 for c in bins["confidence"]], dtype=np.float64)
    if count.sum() == 0:
        return 0.0, 0.0
    right = np.random.default_rng(seed).binomial(count, confidence, size=(draws, len(count)))
    ece = np.abs(right - count * confidence).sum(1) / count.sum()
    return float(ece.mean()), float(np.quantile(ece, 0.95))


def figures(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> Figures:
    """The calibration figures of float logits (n, classes) and int labels (n) at `temperature`."""
    scaled = logits.float() / temperature
    probabilities = scaled.softmax(1)
    one_hot = F.one_hot(labels, logits.shape[1]).float()
    bins = reliability(probabilities, labels)
    return Figures(
        ece=expected_calibration_error(probabilities, labels),
        nll=float(F.cross_entropy(scaled, labels)),
        brier=float(((probabilities - one_hot) ** 2).sum(1).mean()),
        mean_confidence=float(probabilities.max(1).values.mean()),
        temperature=float(temperature),
        ece_floor=sampling_floor(bins)[0],
        reliability=bins,
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
