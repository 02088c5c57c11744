"""The learning-rate finder: where it says a known problem diverges, fastai's valley rule on hand-made
curves, the model and RNG as they were afterwards, every param group scaled alike, and the command."""

import json
import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import make_dataset

from cnnlab.cli import main
from cnnlab.errors import ConfigError
from cnnlab.lrfind import LrSweep, find_lr, suggest_lr, valley_index
from cnnlab.optim import build_optimizer
from cnnlab.presets import preset


def least_squares(seed: int = 0):
    """Fixed data for a linear model, its half-mean-squared-error loss, and 2/L: plain gradient descent
    on it converges for lr < 2/L and diverges above (L: the largest eigenvalue of the Hessian X^T X / n)."""
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    targets = inputs @ torch.randn(5, 1, generator=gen, dtype=torch.float64)
    targets += 0.1 * torch.randn(64, 1, generator=gen, dtype=torch.float64)
    hessian = inputs.T @ inputs / len(inputs)
    return inputs, targets, 2.0 / torch.linalg.eigvalsh(hessian).max().item()


def half_mse(outputs, targets):
    return 0.5 * ((outputs - targets) ** 2).mean()


def test_the_loss_blows_up_above_two_over_l_and_the_suggestion_lies_below():
    inputs, targets, limit = least_squares()
    torch.manual_seed(0)
    model = nn.Linear(5, 1, bias=False).double()
    sweep = LrSweep(start_lr=limit * 1e-4, end_lr=limit * 100, steps=100)
    res = find_lr(model, [(inputs, targets)], lambda m: torch.optim.SGD(m.parameters(), lr=1.0), half_mse, sweep)
    assert res.lrs[0] == pytest.approx(sweep.start_lr, rel=1e-12)
    # below 2/L every step of gradient descent lowers the loss; the rise that stops the sweep comes above it
    rises = [i for i in range(1, len(res.losses)) if res.losses[i] > res.losses[i - 1]]
    assert rises and all(res.lrs[i] > limit for i in rises)
    assert res.stop_reason.startswith("stopped at step") and "4x" in res.stop_reason
    assert len(res.lrs) < sweep.steps and res.smoothed[-1] > 4 * min(res.smoothed)
    assert limit / 1000 < res.suggestion < limit
    assert res.rule.startswith("valley")


def test_a_nan_loss_ends_the_sweep_and_the_suggestion_comes_before_it():
    inputs, targets, limit = least_squares(1)
    model = nn.Linear(5, 1, bias=False).double()
    sweep = LrSweep(start_lr=limit * 1e-4, end_lr=limit * 1e12, steps=160, stop_factor=0)  # never by the 4x rule
    res = find_lr(model, [(inputs, targets)], lambda m: torch.optim.SGD(m.parameters(), lr=1.0), half_mse, sweep)
    assert not math.isfinite(res.smoothed[-1]) and "not finite" in res.stop_reason and len(res.lrs) < sweep.steps
    assert all(map(math.isfinite, res.smoothed[:-1]))
    assert limit / 1000 < res.suggestion < limit
    assert json.loads(json.dumps(res.to_dict(), allow_nan=False))["losses"][-1] is None


@pytest.mark.parametrize(
    "losses, expected",
    [
        ([5.0, 4.0, 3.0, 2.0, 1.0], 0),  # falling all along: start -1, n 5, -1 + 1 + 0
        # a plateau (ties do not fall), a valley of 7 points ending at index 9, then a rise: start 9 - 7 = 2,
        # third 7/3: 2 + 2 + 1
        ([3, 3, 3, 3, 2.9, 2.5, 2.0, 1.5, 1.0, 0.8, 1.2, 2.0, 4.0], 5),
        # the valley need not be contiguous: 4 > 3 > 2 > 0.5 (length 4, ends at index 4): 0 + 1 + 0
        ([4, 1, 3, 2, 0.5, 5], 1),
        # two valleys: the longer one (8 points, 9.6 down to 0.9 at index 12) wins over the first (3 points):
        # start 12 - 8 = 4, third 8/3: 4 + 2 + 1
        ([3, 2, 1, 9, 9.5, 9.6, 8, 7, 6, 5, 4, 3.5, 0.9, 10], 7),
        ([2.0, 2.0, 2.0], 0),  # nothing falls: clamped to the first point (fastai's index would be -1)
    ],
)
def test_valley_rule_on_hand_made_curves(losses, expected):
    assert valley_index(losses) == expected


def test_suggest_skips_the_first_tenth_and_the_last_five_points_and_stops_at_a_nan():
    # a steep fall in the first 10 points (skipped), then a 20-point valley, then a rise
    smoothed = [100.0 - 5 * i for i in range(10)] + [10.0 - 0.4 * i for i in range(20)] + [9.0, 12.0, 20.0, 30, 40, 50]
    lrs = [10.0 ** (i / 10) for i in range(len(smoothed))]
    index, rule = suggest_lr(lrs, smoothed, planned_steps=100)
    # window = steps 10..30 (the last 5 left out); in it the valley is 20 points ending at its index 19:
    # start -1, third 20/3: -1 + 6 + 3 = 8, i.e. step 18
    assert index == 18 and "steps 10-30" in rule
    nan_at = [1.0 - 0.01 * i for i in range(40)] + [float("nan")] + [0.0] * 20
    index, _ = suggest_lr(list(range(len(nan_at))), nan_at, planned_steps=60)
    assert index < 40 - 5


class Small(nn.Module):
    """Conv, BatchNorm (running buffers), dropout (the RNG) and a head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.drop(F.relu(self.bn(self.conv(x)))).mean((2, 3)))


def tiny_batches(count=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 6, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)) for _ in range(count)]


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_model_and_rng_are_bitwise_as_before():
    torch.manual_seed(0)
    model = Small().eval()  # in eval mode before: it must come back so
    before, rng = snapshot(model), torch.get_rng_state()
    res = find_lr(
        model,
        tiny_batches(),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
        sweep=LrSweep(start_lr=1e-3, end_lr=10, steps=12),
    )
    assert len(res.lrs) >= 6 and len(set(res.losses)) > 1  # it trained (3 batches, several epochs)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert not any(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)


def test_the_model_is_put_back_when_the_sweep_fails():
    torch.manual_seed(0)
    model = Small()
    before = snapshot(model)
    calls = []

    def failing(outputs, labels):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return F.cross_entropy(outputs, labels)

    with pytest.raises(RuntimeError, match="boom"):
        find_lr(
            model,
            tiny_batches(),
            lambda m: torch.optim.SGD(m.parameters(), lr=1.0),
            failing,
            LrSweep(start_lr=0.1, end_lr=10, steps=10),
        )
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.training


def recording(optimizer, seen):
    """`optimizer` whose step first records every group's lr."""
    step = optimizer.step

    def recorded(*args, **kwargs):
        seen.append([group["lr"] for group in optimizer.param_groups])
        return step(*args, **kwargs)

    optimizer.step = recorded
    return optimizer


def test_groups_with_their_own_lr_keep_their_ratio():
    model = Small()
    seen = []

    def make(m):
        return recording(
            torch.optim.SGD(
                [
                    {"params": m.head.parameters(), "lr": 0.5},
                    {"params": [*m.conv.parameters(), *m.bn.parameters()], "lr": 0.05},
                ]
            ),
            seen,
        )

    res = find_lr(model, tiny_batches(), make, sweep=LrSweep(start_lr=1e-4, end_lr=1e-1, steps=8))
    assert res.base_lrs == [0.5, 0.05] and res.reference_lr == 0.5
    assert [lrs[0] for lrs in seen] == res.lrs
    assert all(lrs[1] == pytest.approx(lrs[0] / 10, rel=1e-12) for lrs in seen)


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")
def test_muon_lr_is_scaled_with_the_sgd_groups():
    model = Small()
    cfg = preset("fast", optimizer="muon", lr=0.2, muon_lr=0.05, precision="fp32", whiten_bias_epochs=0.0)
    seen = []
    res = find_lr(
        model,
        tiny_batches(),
        lambda m: recording(build_optimizer(m, cfg), seen),
        sweep=LrSweep(start_lr=1e-4, end_lr=1e-2, steps=6),
    )
    assert res.base_lrs == [0.2, 0.05]  # the SGD group (head, biases, BN), then Muon's filters
    assert all(lrs[1] == pytest.approx(lrs[0] / 4, rel=1e-12) for lrs in seen) and len(seen) == 6


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"steps": 1}, "--steps (1)"),
        ({"start_lr": 0.0}, "--start-lr (0.0)"),
        ({"start_lr": 1.0, "end_lr": 0.1}, "below --end-lr (0.1)"),
    ],
)
def test_bad_sweeps_are_config_errors(kwargs, needle):
    with pytest.raises(ConfigError) as info:
        LrSweep(**kwargs)
    assert needle in str(info.value)


def test_cli_writes_the_plot_and_the_record_and_prints_the_suggestion(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", 20)
    out = tmp_path / "lr"
    code = main(["lr-find", "--data", data, "--out", str(out), "--steps", "12", "--threads", "1", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert sorted(os.listdir(out)) == ["lr_find.json", "lr_find.png"]
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "lr_find.json").read_text())
    assert len(record["lrs"]) == len(record["losses"]) == len(record["smoothed"]) <= 12
    assert record["lrs"][0] == pytest.approx(1e-7) and record["rule"].startswith("valley")
    assert record["suggestion"] == record["lrs"][record["suggestion_index"]]
    assert record["config"]["model"] == "fastnet" and record["suggested_config"]["lr"] > 0
    assert f"suggested lr {record['suggested_config']['lr']:.3g}" in printed and "rule: valley" in printed


@pytest.mark.parametrize(
    "argv, needle", [([], "no dataset given: pass --data PATH"), (["--steps", "1"], "--steps (1) must be at least 2")]
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    out = tmp_path / "lr"
    code = main(["lr-find", "--out", str(out), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not out.exists()
