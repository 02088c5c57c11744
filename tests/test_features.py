"""Near-duplicates by a run's features, confirmed by detail: the nearest neighbours and the detail correlation
against brute force; a shifted, re-coloured, mirrored copy matches and a look-alike does not; the embedding is
the input of the model's last linear layer."""

import numpy as np
import pytest
import torch

from cnnlab.check import features as F
from cnnlab.check.core import DEFAULT_SIMILARITY
from cnnlab.check.features import detail, detail_correlation, last_linear, nearest


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("same", [False, True])
def test_nearest_is_brute_force(monkeypatch, same):
    rng = np.random.default_rng(0)
    a = unit(rng.normal(size=(300, 8)))
    b = a if same else unit(rng.normal(size=(200, 8)))
    monkeypatch.setattr(F, "BLOCK_ELEMENTS", 1000)  # many blocks
    found = nearest(a, b, 5, same)
    sims = a @ b.T
    if same:
        np.fill_diagonal(sims, -np.inf)
    expected = np.argsort(-sims, axis=1)[:, :5]
    assert [set(r) for r in found.tolist()] == [set(r) for r in expected.tolist()]


def brute_correlation(a: np.ndarray, b: np.ndarray) -> float:
    best, n, s = -1.0, F.DETAIL_SIZE, F.MAX_SHIFT
    for other in (b, b[:, ::-1]):
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                pa, pb = [], []
                for y in range(n):
                    for x in range(n):
                        if 0 <= y - dy < n and 0 <= x - dx < n:
                            pa.append(a[y, x])
                            pb.append(other[y - dy, x - dx])
                best = max(best, float(np.corrcoef(pa, pb)[0, 1]))
    return best


def test_detail_correlation_is_brute_force():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 32, 32)).astype(np.float32), rng.normal(size=(2, 32, 32)).astype(np.float32)
    b[1] = np.roll(a[1], (2, -1), axis=(0, 1))[:, ::-1]  # a shifted, mirrored copy
    found = detail_correlation(a, b)
    assert found == pytest.approx([brute_correlation(a[k], b[k]) for k in range(2)], abs=1e-4)
    assert found[1] > 0.95 > 0.3 > found[0]


def test_a_recoloured_shifted_mirrored_copy_matches_and_a_look_alike_does_not():
    rng = np.random.default_rng(2)
    scene = np.clip(rng.normal(120, 40, size=(40, 40, 3)), 0, 255)
    for _ in range(3):  # a few smooth shapes on the noise: an image with structure
        y, x = rng.integers(5, 35, size=2)
        scene[max(0, y - 6) : y + 6, max(0, x - 6) : x + 6] = rng.integers(0, 255, size=3)
    original = scene[4:36, 4:36].astype(np.uint8)
    copy = (scene[2:34, 6:38, ::-1] * 0.7 + 30)[:, ::-1].astype(np.uint8)  # shifted, channels swapped, darker, mirrored
    look_alike = np.clip(rng.normal(120, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)  # same colours, other pixels
    d = detail(np.stack([original, copy, look_alike]))
    scores = detail_correlation(d[[0, 0]], d[[1, 2]])
    assert scores[0] >= DEFAULT_SIMILARITY > 0.3 > scores[1]


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


def test_data_check_pairs_images_by_a_runs_features(tmp_path, monkeypatch):
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
    monkeypatch.setattr(F, "CANDIDATES", 10_000)  # every image a candidate of every other: brute force below
    assert main([*args, "--similarity", "0.5"]) in (0, 1)
    saved = json.loads((out / "data_check.json").read_text())
    found = {frozenset((p["a"]["path"], p["b"]["path"])): p["similarity"] for p in saved["pairs"] if p["similarity"]}
    # against brute force over the same embeddings (blank images are left out of the search)
    paths = sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs if f.endswith(".png")
    )
    embedded = embed(run, [os.path.join(root, p) for p in paths])
    assert embedded.features.shape[0] == len(paths) and np.allclose(np.linalg.norm(embedded.features, axis=1), 1)
    index = {p: k for k, p in enumerate(paths)}
    expected = {
        frozenset((p, q))
        for p in paths
        for q in paths
        if p < q and detail_correlation(embedded.detail[[index[p]]], embedded.detail[[index[q]]])[0] >= 0.5
    }
    assert set(found) == expected
    for pair, s in found.items():
        a, b = sorted(pair)
        assert s == pytest.approx(
            float(detail_correlation(embedded.detail[[index[a]]], embedded.detail[[index[b]]])[0]), abs=1e-5
        )


def test_no_pairs_no_correlations():
    empty = np.zeros((0, F.DETAIL_SIZE, F.DETAIL_SIZE), np.float32)
    assert detail_correlation(empty, empty).shape == (0,)
