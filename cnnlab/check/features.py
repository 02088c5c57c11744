"""Near-duplicates as a careful person finds them: candidates by what a trained network sees, confirmed by
the pixels. A perceptual hash misses most shifted, cropped and re-coloured copies (Barz & Denzler 2020, "Do
we train on test data? Purging CIFAR of near-duplicates", found theirs with CNN features and a person
looking at each pair). Here each image is embedded by a finished run's penultimate layer (the input of its
last linear layer, the features the classifier reads); each image's nearest others by those features, and
by their fine detail, are the candidates; a candidate pair is a near-duplicate when the fine detail of the
two (grayscale minus its blur: edges and texture, not colour or layout) correlates at least a threshold at
the best shift of up to MAX_SHIFT pixels, either image mirrored or not. Features alone rank look-alikes
of one class (two ships on a calm sea) as high as copies; the detail tells them apart (docs/data_check.md
shows the pairs on both sides of the threshold)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CnnlabError
from ..progress import progress_bar

EMBED_CHUNK = 1024  # images decoded and embedded at a time
BLOCK_ELEMENTS = 1 << 22  # similarities computed per matrix product (16 MB of float32)
DETAIL_SIZE = 32  # px: the detail compared, each image resized to this square
DETAIL_BLUR = 1.5  # px (at DETAIL_SIZE): the Gaussian blur subtracted, leaving edges and texture
MAX_SHIFT = 3  # px (at DETAIL_SIZE): copies shifted by up to this much are matched
DETAIL_MARGIN = 3  # px (at DETAIL_SIZE) of each edge left out: frames and borders, alike in unrelated images
CANDIDATES = 10  # nearest images by features, by detail and by mirrored detail, each compared
PAIRS_PER_BLOCK = 20_000  # candidate pairs whose detail is compared at a time


def last_linear(model: torch.nn.Module) -> torch.nn.Linear:
    """The model's last nn.Linear in registration order: the classifier head whose input is the features."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise CnnlabError("the run's model has no linear layer to take features from (--features RUN)")
    return linears[-1]


@dataclass
class Embedding:
    """What the near-duplicate search compares: per image its centred, unit-length features and its detail."""

    features: np.ndarray  # (N, D) float32 unit vectors
    detail: np.ndarray  # (N, DETAIL_SIZE, DETAIL_SIZE) float32: grayscale minus its blur


@torch.no_grad()
def embed(run_dir: str, paths: list[str], progress: bool = False) -> Embedding:
    """Each file decoded as the run's images were: its penultimate features (no test-time augmentation),
    centred on their mean over the N files and L2-normalised, and its detail. Centred: after a ReLU and
    pooling every feature is positive, and uncentred any two images' cosine is near 1 (on CIFAR-10, 99.5% of
    test images had a training image at 0.90 or more). A file that cannot be read raises DataError naming it."""
    from ..predict import load

    predictor = load(run_dir, precision="fp32")
    captured: list[torch.Tensor] = []
    details: list[np.ndarray] = []
    hook = last_linear(predictor.model).register_forward_hook(
        lambda _module, inputs, _output: captured.append(inputs[0].detach().float().flatten(1).cpu())
    )
    try:
        for start in progress_bar(progress, range(0, len(paths), EMBED_CHUNK), desc="embedding"):
            arrays = np.stack([predictor.to_array(p) for p in paths[start : start + EMBED_CHUNK]])
            details.append(detail(arrays))
            for first in range(0, len(arrays), predictor.batch_size):
                batch = torch.from_numpy(arrays[first : first + predictor.batch_size]).to(predictor.device)
                predictor.model(predictor.preprocess(batch))
    finally:
        hook.remove()
    if not captured:
        return Embedding(np.zeros((0, 0), np.float32), np.zeros((0, DETAIL_SIZE, DETAIL_SIZE), np.float32))
    features = torch.cat(captured).double()
    unit = torch.nn.functional.normalize(features - features.mean(0), dim=1).float().numpy()
    return Embedding(unit, np.concatenate(details))


def detail(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, DETAIL_SIZE, DETAIL_SIZE) float32: grayscale (ITU-R 601 luma), resized with
    antialiasing, minus its Gaussian blur (sigma DETAIL_BLUR): what a re-coloured, re-exposed copy keeps and a
    look-alike with the same layout does not; zero in the DETAIL_MARGIN pixels along each edge (a picture
    frame or a border correlates between unrelated images: on CIFAR-10 it made most of the false pairs)."""
    from scipy.ndimage import gaussian_filter

    gray = torch.from_numpy(images).float() @ torch.tensor([0.299, 0.587, 0.114])
    if gray.shape[1:] != (DETAIL_SIZE, DETAIL_SIZE):
        gray = torch.nn.functional.interpolate(
            gray[:, None], size=(DETAIL_SIZE, DETAIL_SIZE), mode="bilinear", antialias=True, align_corners=False
        )[:, 0]
    gray = gray.numpy()
    out = (gray - gaussian_filter(gray, sigma=(0, DETAIL_BLUR, DETAIL_BLUR))).astype(np.float32)
    m = DETAIL_MARGIN
    out[:, :m], out[:, -m:], out[:, :, :m], out[:, :, -m:] = 0, 0, 0, 0
    return out


def _overlap(shift: int, n: int = DETAIL_SIZE) -> tuple[slice, slice]:
    """The rows (or columns) of the first and of the second of two n-pixel images that meet when the first is
    read `shift` pixels on from the second (first[k + shift] meets second[k])."""
    return (slice(shift, n), slice(0, n - shift)) if shift >= 0 else (slice(0, n + shift), slice(-shift, n))


def _box_sums(x: torch.Tensor) -> torch.Tensor:
    """(M, n + 1, n + 1) prefix sums of (M, n, n): a rectangle's sum is four look-ups."""
    return torch.nn.functional.pad(x.cumsum(1).cumsum(2), (1, 0, 1, 0))


def _box(sums: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
    return (
        sums[:, rows.stop, cols.stop]
        - sums[:, rows.start, cols.stop]
        - sums[:, rows.stop, cols.start]
        + sums[:, rows.start, cols.start]
    )


def detail_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M,) for M pairs of details a[m], b[m]: the highest Pearson correlation over their overlap, over every
    shift of b by up to MAX_SHIFT pixels in each direction and b mirrored or not. Each pair's sums of
    products at every shift come from one cross-correlation by FFT (zero-padded to n + MAX_SHIFT, so no shift
    wraps around), the sums and sums of squares over each overlap from prefix sums: the correlation is
    exact without a pass per shift over the pixels."""
    if not len(a):
        return np.zeros(0, np.float32)  # (an FFT of no images is an error in some backends)
    n, s = a.shape[1], MAX_SHIFT
    size = (n + s, n + s)
    x = torch.from_numpy(a).double()
    x_sums, xx_sums = _box_sums(x), _box_sums(x * x)
    x_spectrum = torch.fft.rfft2(x, s=size)
    best = torch.full((len(a),), -1.0, dtype=torch.float64)
    for y in (torch.from_numpy(b).double(), torch.from_numpy(b).double().flip(2)):
        # products[m, dy, dx] (indices mod n + s) = sum over the overlap of x[m, u + dy, v + dx] * y[m, u, v]
        products = torch.fft.irfft2(x_spectrum * torch.fft.rfft2(y, s=size).conj(), s=size)
        y_sums, yy_sums = _box_sums(y), _box_sums(y * y)
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                (rows_x, rows_y), (cols_x, cols_y) = _overlap(dy, n), _overlap(dx, n)
                count = (rows_x.stop - rows_x.start) * (cols_x.stop - cols_x.start)
                sx, sxx = _box(x_sums, rows_x, cols_x), _box(xx_sums, rows_x, cols_x)
                sy, syy = _box(y_sums, rows_y, cols_y), _box(yy_sums, rows_y, cols_y)
                covariance = products[:, dy % size[0], dx % size[1]] - sx * sy / count
                spread = ((sxx - sx * sx / count) * (syy - sy * sy / count)).clamp(min=1e-12).sqrt()
                best = torch.maximum(best, covariance / spread)
    return best.float().numpy()


def nearest(a: np.ndarray, b: np.ndarray, k: int, same: bool = False) -> np.ndarray:
    """(len(a), min(k, len(b))) indices of each row of a's most similar rows of b (unit vectors, by blocks of
    matrix products); with `same` (a is b) a row is not its own neighbour."""
    k = min(k, len(b) - (1 if same else 0))
    out = np.zeros((len(a), max(k, 0)), np.int64)
    if k <= 0:
        return out
    step = max(1, BLOCK_ELEMENTS // max(1, len(b)))
    for start in range(0, len(a), step):
        block = a[start : start + step] @ b.T
        if same:
            block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        out[start : start + step] = np.argpartition(-block, k - 1, axis=1)[:, :k]
    return out


def _vectors(detail_: np.ndarray) -> np.ndarray:
    flat = detail_.reshape(len(detail_), -1)
    flat = flat - flat.mean(1, keepdims=True)
    return (flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)).astype(np.float32)


def candidates(a: Embedding, b: Embedding, same: bool) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (i, j) whose detail is compared: each a[i]'s CANDIDATES nearest b[j] by features, by
    detail and by mirrored detail (with `same`, each pair once, i < j)."""
    da, db = _vectors(a.detail), _vectors(b.detail)
    mirrored = _vectors(b.detail[:, :, ::-1])
    found = [nearest(a.features, b.features, CANDIDATES, same), nearest(da, db, CANDIDATES, same)]
    found.append(nearest(da, mirrored, CANDIDATES, same))
    j = np.concatenate(found, axis=1)
    i = np.repeat(np.arange(len(a.features)), j.shape[1])
    j = j.ravel()
    if same:
        i, j = np.minimum(i, j), np.maximum(i, j)
        keep = i != j
        i, j = i[keep], j[keep]
    unique = np.unique(i * max(len(b.features), 1) + j)
    return unique // max(len(b.features), 1), unique % max(len(b.features), 1)


def matched_pairs(
    a: Embedding, b: Embedding, threshold: float, same: bool = False, limit: int = 1 << 62, progress: str = ""
) -> Similar:
    """The candidate pairs (i, j) whose detail correlation (detail_correlation) is at least `threshold`, the
    most similar first, at most `limit`; with `same` (a is b) each pair once, i < j. `progress`: a progress
    bar over the comparisons, with this description (none when empty)."""
    if not len(a.features) or not len(b.features):
        return Similar(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    i, j = candidates(a, b, same)
    blocks = range(0, len(i), PAIRS_PER_BLOCK)
    scores = np.concatenate(
        [
            detail_correlation(a.detail[i[k : k + PAIRS_PER_BLOCK]], b.detail[j[k : k + PAIRS_PER_BLOCK]])
            for k in progress_bar(bool(progress), blocks, desc=progress, unit="block")
        ]
        or [np.zeros(0, np.float32)]
    )
    keep = np.flatnonzero(scores >= threshold)
    order = keep[np.argsort(-scores[keep], kind="stable")][:limit]
    return Similar(i[order], j[order], scores[order].astype(np.float32))


@dataclass
class Similar:
    """Index pairs into the two embedding arrays given and their similarities, the closest first."""

    i: np.ndarray
    j: np.ndarray
    similarity: np.ndarray

    def __len__(self) -> int:
        return len(self.i)
