"""Items 6 and 7 of the hardening review: the seed preset computes as the study did (fp32, Keras's
BatchNorm moving variance), whatever the hardware offers."""

import json

import pytest
import torch
from conftest import make_dataset

from cnnlab import device as device_module
from cnnlab.cli import main
from cnnlab.models import create_model
from cnnlab.presets import preset


@pytest.mark.parametrize("shape", [(50, 512), (4, 96, 5, 7)])
def test_moving_variance_is_updated_with_the_biased_batch_variance_as_keras_does(shape):
    model = create_model("seed_alexnet")
    bn = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.num_features == shape[1]
    ][0]
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    bn.double().train()
    bn.running_mean.fill_(0.5)
    bn.running_var.fill_(2.0)
    dims = [0] + list(range(2, len(shape)))
    for _ in range(2):  # two updates, so the previous moving value enters too
        before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
        bn(x)
        # Keras: moving = moving * 0.99 + batch_statistic * 0.01, batch variance = mean of squared deviations
        batch_var = ((x - x.mean(dims, keepdim=True)) ** 2).mean(dims)
        torch.testing.assert_close(bn.running_mean, before_mean * 0.99 + x.mean(dims) * 0.01, rtol=0, atol=1e-12)
        torch.testing.assert_close(bn.running_var, before_var * 0.99 + batch_var * 0.01, rtol=0, atol=1e-12)


def test_seed_preset_pins_fp32():
    assert preset("seed").precision == "fp32"
    assert preset("fast").precision == "auto"


def test_seed_preset_trains_in_fp32_where_bf16_would_be_chosen(tmp_path, monkeypatch):
    # as on a CPU with AMX or any CUDA GPU: `auto` would pick bf16 there
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)
    assert device_module.use_bf16("auto", torch.device("cpu"))
    root = make_dataset(tmp_path / "ds", 10, 2)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "seed",
                "--data",
                root,
                "--epochs",
                "1",
                "--batch-size",
                "3",
                "--eval-batch-size",
                "6",
                "--threads",
                "1",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.load(open(out / "config.json"))["data"]["bf16"] is False
