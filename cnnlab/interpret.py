"""Why a model fails: the test images it is most wrong about, the classes it confuses, and where it looked.

    result = interpret_run("runs/fast", top=24)      # -> Interpretation
    write_interpretation(result, "runs/fast")       # interpret.json, interpret.html

The probabilities are the run's own evaluation (its TTA and precision, as `cnnlab evaluate` computes
them), calibrated by the run's temperature (fitted on its validation split); the loss of an image is its
cross-entropy under those probabilities. interpret.html is one self-contained page: the images
and their Grad-CAM maps (explain.py) are embedded as data: URIs, it has no script and loads nothing, and
every name taken from the dataset (class folders, file names) is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import runs
from .data import cifar
from .data.dataset import Dataset, Split
from .data.preprocess import Preprocessing
from .device import set_threads, use_bf16
from .errors import CnnlabError
from .evaluation import TestTimeAugmentation, metrics_from_logits, predict_batches
from .explain import data_uri, enlarge, explain_batches, overlay
from .files import write_atomic
from .pages import page
from .pipeline import load_data, load_trained, make_loader

JSON_NAME, HTML_NAME = "interpret.json", "interpret.html"


@dataclass
class TopLoss:
    """One image of the split: `row` its index in the split (the order of metrics.json's test_predictions),
    `file` its path (None for CIFAR python batches, which hold no files)."""

    row: int
    file: str | None
    true_class: str
    predicted_class: str
    predicted_probability: float
    true_probability: float
    loss: float


@dataclass
class ConfusedPair:
    true_class: str
    predicted_class: str
    count: int


@dataclass
class Pictures:
    """What the page shows of the top losses: the stored images, uint8 (N, H, W, 3), and the Grad-CAM maps
    of their predicted and their true class, float (N, h, w) in [0, 1] at the model's input size."""

    images: np.ndarray
    predicted_cams: np.ndarray
    true_cams: np.ndarray


@dataclass
class Interpretation:
    run_dir: str
    model: str
    split: str  # test, else validation
    n: int
    accuracy: float
    tta: bool
    cam_layer: str
    top_losses: list[TopLoss]
    confused: list[ConfusedPair]  # off-diagonal cells of the confusion matrix, largest first
    pictures: Pictures | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("pictures")
        return out


def top_loss_rows(logits: torch.Tensor, labels: torch.Tensor, top: int) -> np.ndarray:
    """Indices of the `top` highest cross-entropy losses, highest first (ties: the earlier row first)."""
    losses = F.cross_entropy(logits.float(), labels, reduction="none").numpy()
    return np.argsort(-losses, kind="stable")[:top]


def confused_pairs(confusion: list[list[int]], classes: list[str], limit: int = 10) -> list[ConfusedPair]:
    """The `limit` largest off-diagonal counts (true class, predicted as), ties in row-major order."""
    matrix = np.asarray(confusion)
    np.fill_diagonal(matrix, 0)
    order = np.argsort(-matrix, axis=None, kind="stable")[:limit]
    pairs = [
        ConfusedPair(classes[i], classes[j], int(matrix[i, j])) for i, j in zip(*np.unravel_index(order, matrix.shape))
    ]
    return [p for p in pairs if p.count > 0]


def split_root(dataset: Dataset, name: str) -> str | None:
    """The folder a split's file names are relative to (None for CIFAR python batches): root/test for the test
    split, root/train (or the root of a class-folder dataset) for the validation split."""
    root = dataset.source
    if cifar.is_cifar_folder(root) or cifar.is_cifar_folder(os.path.join(root, cifar.CIFAR10_DIRNAME)):
        return None
    sub = os.path.join(root, "test" if name == "test" else "train")
    return sub if os.path.isdir(sub) else root


def _split_of(dataset: Dataset, data_path: str) -> tuple[Split, str]:
    if dataset.test is not None:
        return dataset.test, "test"
    if dataset.val is not None:
        return dataset.val, "validation"
    raise CnnlabError(
        f"{data_path}: no test folder and no validation split to interpret; pass --data with a test/ folder"
    )


def interpret_run(
    run_dir: str, top: int = 24, data: str | None = None, cam_layer: str | None = None, pairs: int = 10
) -> Interpretation:
    """The `top` images of the run's test split (else validation split; `data`: another dataset's) with the
    highest loss, the `pairs` most confused class pairs, and Grad-CAM maps of the top images."""
    if top < 1:
        raise CnnlabError(f"--top {top}: give a number of images of at least 1")
    model, cfg, run = load_trained(run_dir)
    cfg = cfg.replace(progress=False, **({"data": data} if data else {}))
    set_threads(cfg.threads)
    prep = Preprocessing.from_dict(run["data"]["preprocessing"])
    dataset = load_data(cfg, image_size=tuple(prep.image_size))
    if dataset.classes != run["data"]["classes"]:
        raise CnnlabError(f"{cfg.data_path()}: its classes differ from the run's ({', '.join(run['data']['classes'])})")
    split, name = _split_of(dataset, cfg.data_path())
    device = next(model.parameters()).device
    loader = make_loader(split, cfg, prep, device, training=False)
    logits, labels = predict_batches(model, loader, use_bf16(cfg.precision, device), TestTimeAugmentation.of(cfg))
    logits = logits / (runs.temperature(run) or 1.0)  # calibrated: the same predictions, honest probabilities
    metrics = metrics_from_logits(logits, labels, dataset.classes)
    rows = top_loss_rows(logits, labels, top)
    probabilities = torch.softmax(logits.float(), 1).numpy()
    losses = F.cross_entropy(logits.float(), labels, reduction="none").numpy()
    root, classes = split_root(dataset, name), dataset.classes
    found = []
    for row in rows.tolist():
        true, predicted = int(labels[row]), int(probabilities[row].argmax())
        found.append(
            TopLoss(
                row,
                os.path.join(root, split.files[row]) if root else None,
                classes[true],
                classes[predicted],
                float(probabilities[row, predicted]),
                float(probabilities[row, true]),
                float(losses[row]),
            )
        )
    chosen = split.take(rows)
    # batches of 32: the gradients of a batch of the eval batch size could take far more memory
    loader = make_loader(chosen, cfg.replace(eval_batch_size=32), prep, device, training=False)
    predicted_idx = torch.from_numpy(probabilities[rows].argmax(1))
    cams = explain_batches(
        model, (batch for batch, _ in loader), [predicted_idx, torch.from_numpy(chosen.labels)], cam_layer
    )
    pictures = Pictures(np.asarray(chosen.images), cams.maps[0].numpy(), cams.maps[1].numpy())
    return Interpretation(
        os.path.abspath(run_dir),
        cfg.model,
        name,
        len(labels),
        metrics["accuracy"],
        cfg.tta,
        cams.layer,
        found,
        confused_pairs(metrics["confusion"], classes, pairs),
        pictures,
    )


STYLE = """.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;padding:6px;border:1px solid #ccc;width:306px}
figure img{image-rendering:pixelated;width:96px;height:96px;margin-right:2px}
.labels span{display:inline-block;width:98px;font-size:11px;color:#666}
figcaption{font-size:12px;line-height:1.35;overflow-wrap:anywhere}"""  # after the shared look (pages.CSS)


def _card(item: TopLoss, image: str, cams: tuple[str, str], empty: tuple[bool, bool]) -> str:
    """One image: the picture, its predicted and true class's maps (each labelled; "none" where the map is
    zero everywhere: no region raised that class's score), and what the model said."""
    e = html.escape
    where = e(item.file) if item.file else f"row {item.row}"
    labels = [f"{what}{': none' if none else ''}" for what, none in zip(("predicted", "true"), empty)]
    return (
        f'<figure><img src="{image}" alt="image"><img src="{cams[0]}" alt="Grad-CAM, predicted class">'
        f'<img src="{cams[1]}" alt="Grad-CAM, true class"><div class="labels"><span>image</span>'
        f"<span>{labels[0]}</span><span>{labels[1]}</span></div><figcaption>{where}<br>"
        f"true <b>{e(item.true_class)}</b> ({100 * item.true_probability:.1f}%) &middot; predicted "
        f"<b>{e(item.predicted_class)}</b> ({100 * item.predicted_probability:.1f}%) &middot; loss "
        f"{item.loss:.2f}</figcaption></figure>"
    )


def render_html(result: Interpretation) -> str:
    """The self-contained page: no script, nothing loaded from elsewhere (its Content-Security-Policy says
    so to the browser too), every dataset name escaped."""
    e = html.escape
    pairs = "".join(
        f"<tr><td>{e(p.true_class)}</td><td>{e(p.predicted_class)}</td><td>{p.count}</td></tr>" for p in result.confused
    )
    cards = []
    pics = result.pictures
    for index, item in enumerate(result.top_losses):
        if pics is None:
            cards.append(f"<figure><figcaption>{e(item.file or f'row {item.row}')}</figcaption></figure>")
            continue
        image = pics.images[index]
        maps = (pics.predicted_cams[index], pics.true_cams[index])
        cards.append(
            _card(
                item,
                data_uri(enlarge(image, 96)),
                (data_uri(overlay(image, maps[0])), data_uri(overlay(image, maps[1]))),
                (not maps[0].any(), not maps[1].any()),
            )
        )
    name = os.path.basename(result.run_dir)
    return page(
        f"Top losses: {name}",
        [
            f"<h1>Why the model fails: {e(name)}</h1>",
            f'<p class="muted">{e(result.run_dir)}: model {e(result.model)}; {result.split} split, {result.n} images, '
            f"accuracy {100 * result.accuracy:.2f}%; TTA {'on' if result.tta else 'off'}; Grad-CAM layer "
            f"<code>{e(result.cam_layer)}</code></p>",
            "<h2>Most confused pairs</h2>",
            f"<table><tr><th>true class</th><th>predicted as</th><th>images</th></tr>{pairs}</table>",
            f"<h2>The {len(result.top_losses)} images with the highest loss</h2>",
            '<p class="muted">Each: the image, the Grad-CAM map of the predicted class, that of the true class (red: '
            'where the evidence for the class lies; "none": no region raises that class\'s score; maps of the image as '
            "it is, without test-time augmentation); the percentages are the model's probabilities, from its own "
            "evaluation, calibrated on its validation split.</p>",
            f'<div class="grid">{"".join(cards)}</div>',
        ],
        STYLE,
    )


def write_interpretation(result: Interpretation, out_dir: str) -> tuple[str, str]:
    """interpret.json and interpret.html in `out_dir` (created if needed), each written whole or not at all."""
    if os.path.isfile(out_dir):
        raise CnnlabError(f"{out_dir}: is a file; choose a folder for --out")
    # a file name that is not valid UTF-8 (a surrogate escape) is written as its escape, not refused
    text = render_html(result).encode("utf-8", "backslashreplace")  # before anything is written
    os.makedirs(out_dir, exist_ok=True)
    json_path, html_path = os.path.join(out_dir, JSON_NAME), os.path.join(out_dir, HTML_NAME)
    write_atomic(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    write_atomic(html_path, text)
    return json_path, html_path
