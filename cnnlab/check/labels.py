"""Suspected label errors: cleanlab's find_label_issues on out-of-sample class probabilities, those a
finished run gives the test images (images it never trained on)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import CnnlabError, DataError, first_line
from ..progress import progress_bar

PREDICT_CHUNK = 512  # files decoded and predicted at a time (bounds memory on large images)


@dataclass(frozen=True)
class LabelIssue:
    """One suspect: `item` indexes the checked files; probabilities are the run's for the given and the
    suggested (most probable) class."""

    item: int
    given: str
    suggested: str
    given_probability: float
    suggested_probability: float


def rank_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Indices of the suspected label errors, most suspect first (cleanlab's confident learning, ranked by
    self-confidence: the probability of the given label, lowest first)."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        raise CnnlabError("--label-issues needs cleanlab: pip install cleanlab (cnnlab's extra 'check')") from None
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    try:
        ranked = find_label_issues(
            labels=np.asarray(labels), pred_probs=np.asarray(probabilities), return_indices_ranked_by="self_confidence"
        )
    except ValueError as exc:  # cleanlab refuses degenerate input (e.g. probabilities that are not a distribution)
        raise CnnlabError(f"cleanlab cannot rank these labels: {first_line(exc)}") from None
    return np.asarray(ranked, dtype=np.int64)


def training_source_warnings(run_dir: str, path: str) -> list[str]:
    """Whether the run's probabilities of `path`/test are out-of-sample, from the dataset it was trained on
    (its config.json's data.source): refused where its training folder holds those images (or lies inside
    them); nothing where it was `path` itself (training reads train/ only) or a folder of it outside test/;
    a warning where it was another dataset, which may hold copies of them."""
    from ..runs import CONFIG, read_json

    saved = read_json(os.path.join(run_dir, CONFIG))
    source = saved.get("data", {}).get("source") if isinstance(saved, dict) else None
    if not isinstance(source, str):
        return [
            f"--label-issues: {run_dir} does not record the dataset it was trained on; if it trained on "
            f"{os.path.join(path, 'test')}, its label errors are learned, not found"
        ]
    source, root, test = (os.path.realpath(p) for p in (source, path, os.path.join(path, "test")))
    if source != root and os.path.commonpath([source, test]) in (source, test):
        raise CnnlabError(
            f"{run_dir}: trained on {source}, which holds the test images --label-issues ranks (they must be "
            f"ones the run never trained on); give a run trained on {root}"
        )
    if os.path.commonpath([source, root]) == root:
        return []
    return [
        f"--label-issues: {run_dir} was trained on another dataset ({source}), not {root}: if its training "
        "images include these test images, their label errors are learned, not found"
    ]


def run_probabilities(run_dir: str, paths: list[str], progress: bool = False) -> tuple[list[str], np.ndarray]:
    """(the run's classes, probabilities (N, classes) of the image files `paths`) with the run's own
    preprocessing, calibrated by its temperature (predict.load)."""
    from ..predict import load

    predictor = load(run_dir)
    out = []
    for start in progress_bar(progress, range(0, len(paths), PREDICT_CHUNK), desc="predicting"):
        for result in predictor.predict_files(paths[start : start + PREDICT_CHUNK]):
            if result.error:
                raise DataError(result.error)
            out.append(result.probabilities)
    probabilities = np.stack(out) if out else np.zeros((0, len(predictor.classes)), dtype=np.float32)
    return list(predictor.classes), probabilities


def label_issues(
    run_dir: str, items: list[int], paths: list[str], given: list[str], progress: bool = False
) -> list[LabelIssue]:
    """Suspects among the files `paths` (checked-file indices `items`, class names `given`), ranked."""
    classes, probabilities = run_probabilities(run_dir, paths, progress)
    unknown = sorted(set(given) - set(classes))
    if unknown:
        raise CnnlabError(
            f"{run_dir}: the run knows the classes {', '.join(classes)}, not {', '.join(unknown)} "
            "of the test folder; check a run trained on this dataset"
        )
    labels = np.array([classes.index(name) for name in given], dtype=np.int64)
    issues = []
    for k in rank_label_issues(labels, probabilities):
        best = int(np.argmax(probabilities[k]))
        issues.append(
            LabelIssue(
                items[k], given[k], classes[best], float(probabilities[k, labels[k]]), float(probabilities[k, best])
            )
        )
    return issues
