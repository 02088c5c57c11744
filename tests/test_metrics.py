"""metrics_from_logits against scikit-learn's own functions on hand-made predictions: a class never
predicted, a class absent from the split (and one absent yet predicted), two classes and many (top-5)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from cnnlab.evaluation import metrics_from_logits


def logits_for(predicted: list[int], n_classes: int, seed: int = 0) -> torch.Tensor:
    """Logits whose arg-max is `predicted`, the other scores distinct and random (for top-k)."""
    rng = np.random.default_rng(seed)
    scores = rng.permutation(n_classes * len(predicted)).reshape(len(predicted), n_classes).astype(np.float32)
    scores[np.arange(len(predicted)), predicted] = scores.max() + 1
    return torch.from_numpy(scores)


def from_confusion(confusion: list[list[int]]) -> tuple[list[int], list[int]]:
    """(labels, predictions) that make the confusion matrix `confusion` (rows: true class)."""
    labels, predicted = [], []
    for true, row in enumerate(confusion):
        for pred, count in enumerate(row):
            labels += [true] * count
            predicted += [pred] * count
    return labels, predicted


def check_against_sklearn(confusion: list[list[int]], seed: int = 0) -> dict:
    n_classes = len(confusion)
    classes = [f"c{i}" for i in range(n_classes)]
    labels, predicted = from_confusion(confusion)
    logits = logits_for(predicted, n_classes, seed)
    got = metrics_from_logits(logits, torch.tensor(labels), classes)

    assert got["confusion"] == confusion == confusion_matrix(labels, predicted, labels=range(n_classes)).tolist()
    assert got["n"] == len(labels)
    assert got["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-15)
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted), abs=1e-15)
    assert got["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro", zero_division=0), abs=1e-15)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=range(n_classes), zero_division=0
    )
    for i, name in enumerate(classes):
        assert got["per_class"][name] == {
            "precision": pytest.approx(precision[i], abs=1e-15),
            "recall": pytest.approx(recall[i], abs=1e-15),
            "f1": pytest.approx(f1[i], abs=1e-15),
            "support": int(support[i]),
        }
    if n_classes > 5:
        assert got["top5_accuracy"] == pytest.approx(
            top_k_accuracy_score(labels, logits.numpy(), k=5, labels=range(n_classes)), abs=1e-15
        )
    else:
        assert "top5_accuracy" not in got
    return got


def test_a_class_never_predicted():
    got = check_against_sklearn([[5, 1, 0], [2, 4, 0], [3, 1, 0]])  # c2: 4 images, never predicted
    assert got["per_class"]["c2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 4}
    # by hand: recalls 5/6, 4/6, 0 -> balanced 0.5; F1 c0 = 2*5/(6+10) = 0.625, c1 = 2*4/(6+6) = 2/3
    assert got["balanced_accuracy"] == pytest.approx(0.5, abs=1e-15)
    assert got["macro_f1"] == pytest.approx((0.625 + 2 / 3 + 0) / 3, abs=1e-15)
    assert got["accuracy"] == pytest.approx(9 / 16, abs=1e-15)


def test_a_class_absent_from_the_split_is_left_out_of_the_macro_figures():
    got = check_against_sklearn([[3, 1, 0], [1, 3, 0], [0, 0, 0]])  # c2: no image and no prediction
    assert got["per_class"]["c2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert got["balanced_accuracy"] == pytest.approx(0.75, abs=1e-15)  # over c0, c1 only
    assert got["macro_f1"] == pytest.approx(0.75, abs=1e-15)  # F1 0.75 each; c2's undefined F1 not counted
    assert got["per_class_accuracy"]["c2"] == 0.0


def test_a_class_absent_from_the_split_but_predicted_counts_as_zero_f1():
    got = check_against_sklearn([[3, 0, 1], [0, 4, 0], [0, 0, 0]])  # c2: no image, predicted once (wrongly)
    assert got["balanced_accuracy"] == pytest.approx((0.75 + 1.0) / 2, abs=1e-15)  # c2 has no recall
    assert got["macro_f1"] == pytest.approx((2 * 3 / 7 + 1.0 + 0.0) / 3, abs=1e-15)


def test_two_classes():
    check_against_sklearn([[7, 0], [3, 2]])


@pytest.mark.parametrize("seed", range(3))
def test_many_classes_with_top5(seed):
    rng = np.random.default_rng(seed)
    confusion = rng.integers(0, 4, size=(12, 12))
    confusion[5] = 0  # a class absent from the split
    confusion[:, 7] = 0  # a class never predicted
    got = check_against_sklearn(confusion.tolist(), seed)
    assert 0 < got["top5_accuracy"] < 1 and got["accuracy"] <= got["top5_accuracy"]


def test_top5_counts_an_image_whose_class_is_fifth():
    logits = torch.tensor([[6.0, 5, 4, 3, 2, 1], [6.0, 5, 4, 3, 2, 1]])
    got = metrics_from_logits(logits, torch.tensor([4, 5]), list("abcdef"))
    assert got["top5_accuracy"] == 0.5 and got["accuracy"] == 0.0


def test_every_figure_is_a_plain_number_for_json():
    import json

    labels, predicted = from_confusion(
        [
            [2, 1, 0, 0, 0, 0],
            [0, 2, 1, 0, 0, 0],
            [1, 0, 2, 0, 0, 0],
            [0, 0, 0, 3, 0, 0],
            [0, 0, 0, 0, 3, 0],
            [0, 0, 0, 1, 0, 2],
        ]
    )
    got = metrics_from_logits(logits_for(predicted, 6), torch.tensor(labels), list("abcdef"))
    assert json.loads(json.dumps(got)) == got
    assert all(type(got[k]) is float for k in ("accuracy", "loss", "balanced_accuracy", "macro_f1", "top5_accuracy"))
    assert all(type(v["support"]) is int and type(v["f1"]) is float for v in got["per_class"].values())


def test_tensorboard_receives_every_validation_figure_of_a_record(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cnnlab import tracking
    from cnnlab.config import parse_config

    record = {
        "epoch": 1,
        "loss": 1.5,
        "accuracy": 0.25,
        "val_loss": 1.25,
        "val_nll": 1.125,
        "val_accuracy": 0.5,
        "val_balanced_accuracy": 0.375,
        "val_macro_f1": 0.3125,
        "val_top5_accuracy": 0.875,
        "lr": 0.5,
        "time_s": 2.0,
        "eval_time_s": 0.5,
        "loss_name": "cross-entropy, label smoothing 0.2",  # words, not a scalar
    }
    with tracking.Tracker(parse_config({"log": "tensorboard"}), str(tmp_path), images_per_epoch=100) as tracker:
        tracker.on_epoch_end(1, record, None)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    logged = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    figures = {k: [(1, v)] for k, v in record.items() if k not in ("epoch", "loss_name")}
    assert logged == {**figures, "images_per_s": [(1, 50.0)]}
