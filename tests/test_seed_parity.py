"""The seed preset's optimiser takes Keras's Adam steps (benchmarks/seed_parity.py compares the whole model)."""

import math

import numpy as np
import torch
import torch.nn as nn

from cnnlab import preset
from cnnlab.optim import build_optimizer


def keras_adam(
    grads: list[np.ndarray], start: np.ndarray, lr: float, beta_1: float, beta_2: float, epsilon: float
) -> np.ndarray:
    """tf_keras.optimizers.Adam's update in float64: epsilon is added to sqrt(v) before the bias
    correction, which Keras folds into the step size alpha."""
    w, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for t, g in enumerate(grads, 1):
        alpha = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m += (g - m) * (1 - beta_1)
        v += (g * g - v) * (1 - beta_2)
        w -= m * alpha / (np.sqrt(v) + epsilon)
    return w


def test_seed_adam_steps_as_keras_where_gradients_are_near_epsilon():
    cfg = preset("seed")
    layer = nn.Linear(4, 1, bias=False).double()
    start = np.array([[0.1, -0.2, 0.3, 0.05]])
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(start))
    optimizer = build_optimizer(layer, cfg)
    rng = np.random.default_rng(0)
    # gradients from 1e-7 to 1e-3: at the small ones the two placements of epsilon differ most
    scales = np.array([[1e-7, 1e-6, 1e-5, 1e-3]])
    grads = [scales * rng.uniform(0.5, 1.5, size=scales.shape) for _ in range(10)]
    for g in grads:
        layer.weight.grad = torch.from_numpy(g.copy())
        optimizer.step()
    expected = keras_adam(grads, start, cfg.lr, cfg.momentum, 0.999, cfg.adam_eps)
    moved = np.abs(expected - start)  # each weight moves by up to lr x steps
    assert moved.min() > 1e-5
    np.testing.assert_allclose(layer.weight.detach().numpy(), expected, rtol=0, atol=1e-6 * moved.max())


def test_a_benchmark_record_holds_its_figure_command_machine_versions_and_results(tmp_path, monkeypatch):
    import json
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from record import FLAGS, write_record

    monkeypatch.setattr(sys, "argv", ["seed_parity.py", "exact", "--steps", "10"])
    path = write_record("example", "a figure", {"max_abs": 1e-7}, folder=str(tmp_path))
    record = json.loads(open(path, encoding="utf-8").read())
    assert path == str(tmp_path / "example.json") and os.listdir(tmp_path) == ["example.json"]
    assert record["figure"] == "a figure" and record["results"] == {"max_abs": 1e-7}
    assert record["command"].endswith("seed_parity.py exact --steps 10")
    assert record["torch"] == torch.__version__ and set(record["machine"]["flags"]) <= set(FLAGS)
    assert record["machine"]["cpu"] and record["date"][:4].isdigit()


def test_a_resumed_keras_adam_steps_as_an_uninterrupted_one():
    cfg = preset("seed")
    grads = [torch.full((3,), 1e-6 * (k + 1), dtype=torch.float64) for k in range(5)]

    def fresh():
        layer = nn.Linear(3, 1, bias=False).double()
        with torch.no_grad():
            layer.weight.fill_(0.5)
        return layer, build_optimizer(layer, cfg)

    def steps(layer, optimizer, gs):
        for g in gs:
            layer.weight.grad = g[None].clone()
            optimizer.step()

    whole, whole_opt = fresh()
    steps(whole, whole_opt, grads)
    first, first_opt = fresh()
    steps(first, first_opt, grads[:2])
    resumed, resumed_opt = fresh()
    resumed.load_state_dict(first.state_dict())
    resumed_opt.load_state_dict(first_opt.state_dict())
    steps(resumed, resumed_opt, grads[2:])
    assert torch.equal(resumed.weight, whole.weight)
