"""Near-duplicates by what a trained network sees: each image embedded by a finished run's penultimate
layer (the input of its last linear layer, the features the classifier reads), pairs of images whose
embeddings have a cosine similarity of at least a threshold. A perceptual hash misses most shifted,
cropped and re-coloured copies (Barz & Denzler 2020, "Do we train on test data? Purging CIFAR of
near-duplicates", found theirs with CNN features and a person looking at each pair); features trained
to ignore such changes find them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CnnlabError

EMBED_CHUNK = 1024  # images decoded and embedded at a time
BLOCK_ELEMENTS = 1 << 22  # similarities computed per matrix product (16 MB of float32)


def last_linear(model: torch.nn.Module) -> torch.nn.Linear:
    """The model's last nn.Linear in registration order: the classifier head whose input is the features."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise CnnlabError("the run's model has no linear layer to take features from (--features RUN)")
    return linears[-1]


@torch.no_grad()
def embed(run_dir: str, paths: list[str], progress: bool = False) -> np.ndarray:
    """(N, D) float32 unit vectors: each file decoded as the run's images were, its penultimate features
    (no test-time augmentation), centred on their mean over the N files and L2-normalised. Centred: after a
    ReLU and pooling every feature is positive, and uncentred any two images' cosine is near 1 (on CIFAR-10,
    99.5% of test images had a training image at 0.90 or more). A file that cannot be read raises DataError
    naming it."""
    from tqdm import tqdm

    from ..predict import load

    predictor = load(run_dir, precision="fp32")
    captured: list[torch.Tensor] = []
    hook = last_linear(predictor.model).register_forward_hook(
        lambda _module, inputs, _output: captured.append(inputs[0].detach().float().flatten(1).cpu())
    )
    try:
        for start in tqdm(range(0, len(paths), EMBED_CHUNK), desc="embedding", disable=not progress):
            arrays = np.stack([predictor.to_array(p) for p in paths[start : start + EMBED_CHUNK]])
            for first in range(0, len(arrays), predictor.batch_size):
                batch = torch.from_numpy(arrays[first : first + predictor.batch_size]).to(predictor.device)
                predictor.model(predictor.preprocess(batch))
    finally:
        hook.remove()
    if not captured:
        return np.zeros((0, 0), dtype=np.float32)
    features = torch.cat(captured).double()
    return torch.nn.functional.normalize(features - features.mean(0), dim=1).float().numpy()


@dataclass
class Similar:
    """Index pairs into the two embedding arrays given and their cosine similarities, the closest first."""

    i: np.ndarray
    j: np.ndarray
    similarity: np.ndarray

    def __len__(self) -> int:
        return len(self.i)


def similar_pairs(a: np.ndarray, b: np.ndarray, threshold: float, same: bool = False, limit: int = 1 << 62) -> Similar:
    """All (i, j) whose unit vectors a[i], b[j] have a cosine similarity >= threshold, by blocks of matrix
    products; with `same` (a is b) only i < j; the `limit` most similar when there are more."""
    parts_i, parts_j, parts_s = [], [], []
    step = max(1, BLOCK_ELEMENTS // max(1, len(b)))
    for start in range(0, len(a), step):
        block = a[start : start + step] @ b.T
        if same:  # keep j > i only
            block[np.tril_indices(len(block), k=start, m=len(b))] = -np.inf
        i, j = np.nonzero(block >= threshold)
        parts_i.append(i + start)
        parts_j.append(j)
        parts_s.append(block[i, j])
    if not parts_i:
        return Similar(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    i, j, s = np.concatenate(parts_i), np.concatenate(parts_j), np.concatenate(parts_s)
    order = np.argsort(-s, kind="stable")[:limit]
    return Similar(i[order].astype(np.int64), j[order].astype(np.int64), s[order].astype(np.float32))
