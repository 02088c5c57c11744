"""Calibration figures against their definitions, computed here independently; temperature scaling on
made-up over- and under-confident models."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.calibration import N_BINS, figures, fit_temperature


def ece_by_definition(probabilities: np.ndarray, labels: np.ndarray, bins: int = N_BINS) -> float:
    """Guo et al.'s ECE: images binned by top-1 confidence into equal-width bins (lower edge open),
    sum over bins of |bin accuracy - bin mean confidence| weighted by the bin's share of images."""
    confidence, predicted = probabilities.max(1), probabilities.argmax(1)
    total = 0.0
    for b in range(bins):
        inside = (confidence > b / bins) & (confidence <= (b + 1) / bins)
        if inside.any():
            total += inside.mean() * abs((predicted[inside] == labels[inside]).mean() - confidence[inside].mean())
    return float(total)


def made_up(n: int = 4000, classes: int = 10, sharpness: float = 3.0, seed: int = 0):
    """Logits whose softmax at temperature 1 is calibrated (labels drawn from it), then sharpened."""
    g = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(n, classes, generator=g) * 2.0
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=g).squeeze(1)
    return true_logits * sharpness, labels


def test_ece_is_torchmetrics_multiclass_calibration_error():
    from torchmetrics.functional.classification import multiclass_calibration_error

    for sharpness in (0.3, 1.0, 4.0):
        logits, labels = made_up(n=3000, sharpness=sharpness, seed=int(sharpness * 10))
        probabilities = logits.softmax(1)
        theirs = multiclass_calibration_error(probabilities, labels, num_classes=10, n_bins=N_BINS, norm="l1")
        assert figures(logits, labels).ece == pytest.approx(float(theirs), abs=1e-6)


def test_figures_match_their_definitions():
    logits, labels = made_up(sharpness=2.5)
    got = figures(logits, labels)
    p, y = logits.softmax(1).numpy().astype(np.float64), labels.numpy()
    assert got.ece == pytest.approx(ece_by_definition(p, y), abs=1e-5)
    assert got.nll == pytest.approx(float(-np.log(p[np.arange(len(y)), y]).mean()), rel=1e-5)
    one_hot = np.eye(10)[y]
    assert got.brier == pytest.approx(float(((p - one_hot) ** 2).sum(1).mean()), rel=1e-5)
    assert got.mean_confidence == pytest.approx(float(p.max(1).mean()), rel=1e-6)


def test_a_perfectly_confident_right_model_has_no_calibration_error():
    labels = torch.tensor([0, 1, 2, 1])
    got = figures(F.one_hot(labels, 3).float() * 100, labels)
    assert got.ece == pytest.approx(0.0, abs=1e-6) and got.brier == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("sharpness", [3.0, 0.4])  # over-confident, under-confident
def test_temperature_recovers_the_sharpening_and_keeps_every_prediction(sharpness):
    logits, labels = made_up(n=20000, sharpness=sharpness)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(sharpness, rel=0.05)  # the labels were drawn at temperature `sharpness`
    before, after = figures(logits, labels), figures(logits, labels, t)
    assert after.ece < 0.02 < before.ece and after.nll < before.nll
    assert torch.equal((logits / t).argmax(1), logits.argmax(1))  # accuracy unchanged


def test_the_fitted_temperature_minimises_the_likelihood():
    logits, labels = made_up(n=3000, sharpness=1.7, seed=2)
    t = fit_temperature(logits, labels)
    nll = {s: figures(logits, labels, t * s).nll for s in (0.97, 1.0, 1.03)}
    assert nll[1.0] < nll[0.97] and nll[1.0] < nll[1.03]
    assert math.isfinite(t) and 0.05 <= t <= 20


def test_the_sampling_floor_is_what_chance_alone_gives():
    from cnnlab.calibration import sampling_floor

    # one image at confidence 0.5: right or wrong, |outcome - 0.5| is 0.5 every time
    assert sampling_floor({"count": [1], "confidence": [0.5]}) == (0.5, 0.5)
    # certainty is never off; an empty set has no floor
    assert sampling_floor({"count": [1000], "confidence": [1.0]}) == (0.0, 0.0)
    assert sampling_floor({"count": [0, 0], "confidence": [None, None]}) == (0.0, 0.0)
    # n images at confidence p: E|Binomial(n, p) / n - p| ~ sqrt(2 p (1 - p) / (pi n)); 4x the images, half the floor
    small, _ = sampling_floor({"count": [400], "confidence": [0.8]}, draws=20000)
    large, _ = sampling_floor({"count": [1600], "confidence": [0.8]}, draws=20000)
    assert small == pytest.approx(math.sqrt(2 * 0.8 * 0.2 / (math.pi * 400)), rel=0.05)
    assert large / small == pytest.approx(0.5, rel=0.05)


def test_a_calibrated_model_scores_near_its_floor_and_a_miscalibrated_one_far_above():
    from cnnlab.calibration import figures

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5000, 10, generator=generator) * 3
    labels = torch.multinomial(logits.softmax(1), 1, generator=generator).squeeze(1)  # calibrated by construction
    calibrated, squashed = figures(logits, labels), figures(logits, labels, temperature=3.0)
    assert calibrated.ece < calibrated.ece_floor + 0.01
    assert squashed.ece > squashed.ece_floor + 0.1
