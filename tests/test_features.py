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


def test_data_check_pairs_images_by_a_runs_features(tmp_path):
    import json
    import os

    from conftest import make_dataset

    import cnnlab
    from cnnlab.check.features import embed
    from cnnlab.cli import main

    root = make_dataset(tmp_path / "ds", 12, 4)
    run = str(tmp_path / "run")
    cnnlab.train_run(cnnlab.preset("fast", data=root, epochs=2, batch_size=8, progress=False, precision="fp32"), run)
    out = tmp_path / "check"
    args = ["data", "check", root, "--out", str(out), "--quiet", "--workers", "1", "--features", run]
    assert main([*args, "--similarity", "0.9"]) in (0, 1)
    saved = json.loads((out / "data_check.json").read_text())
    by_features = {
        frozenset((p["a"]["path"], p["b"]["path"])): p["similarity"] for p in saved["pairs"] if p["similarity"]
    }
    # against brute force over the same embeddings
    paths = sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs if f.endswith(".png")
    )
    vectors = dict(zip(paths, embed(run, [os.path.join(root, p) for p in paths])))
    expected = {frozenset((p, q)) for p in paths for q in paths if p < q and float(vectors[p] @ vectors[q]) >= 0.9}
    assert set(by_features) == expected
    for pair, s in by_features.items():
        a, b = sorted(pair)
        assert s == pytest.approx(float(vectors[a] @ vectors[b]), abs=1e-5)
