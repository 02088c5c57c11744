"""Near-duplicates by a run's features: the cosine pairs against brute force; the embedding is the input of
the model's last linear layer."""

import numpy as np
import pytest
import torch

from cnnlab.check.features import last_linear, similar_pairs


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("same", [False, True])
def test_similar_pairs_are_brute_forces(monkeypatch, same):
    rng = np.random.default_rng(0)
    a = unit(rng.normal(size=(300, 8)))
    b = a if same else unit(np.concatenate([a[:40] + 0.05 * rng.normal(size=(40, 8)), rng.normal(size=(200, 8))]))
    monkeypatch.setattr("cnnlab.check.features.BLOCK_ELEMENTS", 1000)  # many blocks
    found = similar_pairs(a, b, 0.9, same=same)
    sims = a @ b.T
    expected = {(i, j) for i, j in zip(*np.nonzero(sims >= 0.9)) if not same or j > i}
    assert {(int(i), int(j)) for i, j in zip(found.i, found.j)} == expected and len(expected) > 10
    assert np.allclose(found.similarity, sims[found.i, found.j], atol=1e-6)
    assert (np.diff(found.similarity) <= 0).all()  # most similar first
    capped = similar_pairs(a, b, 0.9, same=same, limit=10)
    assert np.allclose(capped.similarity, found.similarity[:10])


def test_features_are_the_input_of_the_last_linear_layer():
    from cnnlab.models import create_model

    model = create_model("fastnet", num_classes=10).eval()
    head = last_linear(model)
    assert head.out_features == 10
    seen = []
    hook = head.register_forward_hook(lambda m, inputs, out: seen.append((inputs[0], out)))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    hook.remove()
    assert seen[0][0].shape == (2, head.in_features)
    assert torch.allclose(seen[0][1] * model.head_scale, logits, atol=1e-5)  # fastnet scales its head's output
